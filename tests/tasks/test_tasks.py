"""Task families: Random Scaling, the activation mixture, the sine LSTM, the CNNs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperadam_optax import evaluation as ev
from hyperadam_optax import tasks
from hyperadam_optax.tasks.data import load_mnist_5k
from hyperadam_optax.tasks.sine_lstm import sine_batch, sine_lstm


def test_random_scaling_task_starts_at_the_unscaled_point():
    x = jax.random.uniform(jax.random.PRNGKey(0), (64, 784))
    y = jnp.arange(64) % 10
    base = tasks.mnist_mlp(x, y)
    family = tasks.random_scaling_with_convex(base, r=3.0)
    task = family.sample_task(jax.random.PRNGKey(1))
    c = jax.tree.leaves(task["scale"])
    assert all(bool(jnp.all((v >= np.exp(-3) - 1e-6) & (v <= np.exp(3) + 1e-6))) for v in c)
    params = family.init(jax.random.PRNGKey(2), task)
    w0 = base.init(jax.random.PRNGKey(2), {})
    batch = family.sample_batch(jax.random.PRNGKey(3), task)
    a = task["convex_target"]
    expected = base.loss(w0, batch, {}) + jnp.mean(jnp.clip(a ** 2, 0, 10))
    np.testing.assert_allclose(family.loss(params, batch, task), expected, rtol=1e-5)


def test_activation_mixture_is_its_members():
    """``mnist-mlp-mix`` draws one of five unreported activations per task; its loss is that
    member MLP's loss, and a vmapped batch of tasks mixes them."""
    from hyperadam_optax.tasks import VALIDATION_ACTIVATIONS, mnist_mlp, mnist_mlp_mixture

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 784), np.float32), rng.integers(0, 10, 64)
    family = mnist_mlp_mixture(x, y)
    key = jax.random.PRNGKey(0)
    params, batch = family.init(key, {}), family.sample_batch(key, {})
    for i, name in enumerate(VALIDATION_ACTIVATIONS):
        member = mnist_mlp(x, y, activation=name)
        assert float(family.loss(params, batch, {"activation": jnp.int32(i)})) == pytest.approx(
            float(member.loss(params, batch, {})), rel=1e-6)
    drawn = jax.vmap(family.sample_task)(jax.random.split(key, 200))["activation"]
    assert set(np.asarray(drawn).tolist()) == set(range(len(VALIDATION_ACTIVATIONS)))
    # Of Table 1's activations only sigmoid is in the mixture (its runs use other seeds).
    from hyperadam_optax.evaluation import suite_tasks
    reported = {name.removeprefix("mlp-") for name in suite_tasks("table1", (x, y))}
    assert reported & set(VALIDATION_ACTIVATIONS) == {"sigmoid"}


@pytest.fixture(scope="module")
def mnist():
    d = load_mnist_5k()
    return d.x, d.y


def test_sine_batches_follow_the_generator():
    inputs, targets = sine_batch(jax.random.PRNGKey(0), 64, noise=0.0)
    # A noiseless sequence A sin(w x + φ): f(x+1) + f(x-1) = 2 cos(w) f(x) for every x.
    f = np.concatenate([np.asarray(inputs), np.asarray(targets)[:, None]], axis=1)
    ratio = (f[:, 2:] + f[:, :-2]) / (2 * f[:, 1:-1])
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-2, atol=1e-2)
    assert 0 <= np.abs(f).max() <= 10


@pytest.mark.parametrize("layers", [1, 2])
def test_sine_lstm_learns(layers):
    family = sine_lstm(layers=layers)
    r = ev.run_protocol(lambda _: optax.adam(0.02), family, steps=60, runs=2, seed=0)
    assert r.curve[:, -10:].mean() < 0.5 * r.curve[:, :5].mean()


@pytest.mark.slow
@pytest.mark.parametrize("arch,n_params", [("cnn1", 3 * 3 * 16 + 16 + 3 * 3 * 16 * 32 + 32 + 6272 * 10 + 10),
                                           ("cnn2", None)])
def test_cnns_learn(mnist, arch, n_params):
    from hyperadam_optax.tasks.cnn import mnist_cnn

    family = mnist_cnn(*mnist, architecture=arch)
    params = family.init(jax.random.PRNGKey(0), {})
    if n_params is not None:
        assert sum(x.size for x in jax.tree.leaves(params)) == n_params
    r = ev.run_protocol(lambda _: optax.adam(1e-3), family, steps=25, runs=2, seed=0)
    assert r.curve[:, -5:].mean() < 0.6 * r.curve[:, :3].mean()


@pytest.mark.slow
def test_digits_cnn_learns_and_refuses_non_square_images():
    from hyperadam_optax.tasks.cnn import digits_cnn, mnist_cnn

    family = digits_cnn()
    params = family.init(jax.random.PRNGKey(0), {})
    # conv 3x3x1x8, conv 3x3x8x16, two 2x2 pools: 8x8 -> 2x2 x 16 = 64 features -> 10 classes.
    assert sum(x.size for x in jax.tree.leaves(params)) == 80 + 1168 + 650
    r = ev.run_protocol(lambda _: optax.adam(0.01), family, steps=150, runs=2, seed=0)
    assert r.curve[:, -10:].mean() < 0.3 * r.curve[:, :3].mean()
    with pytest.raises(ValueError, match="images must be square"):
        mnist_cnn(np.zeros((4, 60), np.float32), np.zeros(4, np.int32))


def test_parameter_scale_augmentation_is_the_same_problem_in_scaled_coordinates():
    base = tasks.digits_mlp()
    family = tasks.random_scaling(base, r=np.log(1000.0))
    task = family.sample_task(jax.random.PRNGKey(0))
    scales = jax.tree.leaves(task["scale"])
    assert min(float(s.min()) for s in scales) < 1e-2 and max(float(s.max()) for s in scales) > 1e2
    params = family.init(jax.random.PRNGKey(1), task)
    w0 = base.init(jax.random.PRNGKey(1), task["base"])
    batch = family.sample_batch(jax.random.PRNGKey(2), task)
    np.testing.assert_allclose(family.loss(params, batch, task), base.loss(w0, batch, {}),
                               rtol=1e-5)
    # The chain rule: the gradient in scaled coordinates is c ⊙ the original gradient.
    g = jax.grad(family.loss)(params, batch, task)
    g0 = jax.grad(base.loss)(w0, batch, {})
    jax.tree.map(lambda a, b, c: np.testing.assert_allclose(a, b * c, rtol=1e-4, atol=1e-7),
                 g, g0, task["scale"])
    assert base.name == "digits-mlp-relu-std0.1-n1797" and "scaled" in family.name
