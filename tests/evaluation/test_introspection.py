"""hyperadam_internals and trace_hyperadam: what HyperAdam decides, checked independently."""


import jax
import jax.numpy as jnp
import numpy as np

import hyperadam_optax as ha
from hyperadam_optax import hyperadam_internals, meta, tasks
from hyperadam_optax.evaluation import plot_trace, trace_hyperadam
from tests.helpers.reference_hyperadam import ReferenceHyperAdam


def test_internals_match_the_float64_reference(x64):
    theta = ha.init_meta_params(jax.random.key(1), 5, dtype=jnp.float64)
    tx = ha.scale_by_hyperadam(theta)
    params = {"a": jnp.zeros((3, 2), jnp.float64), "b": jnp.zeros((4,), jnp.float64)}
    state = tx.init(params)
    ref = ReferenceHyperAdam(theta, 10)
    for t in range(4):
        g = jax.random.normal(jax.random.key(t), (10,), jnp.float64)
        grads = {"a": g[:6].reshape(3, 2), "b": g[6:]}
        inside = hyperadam_internals(theta, grads, state)
        ref.direction(np.asarray(g))
        for name in ("beta", "gamma", "rho"):
            flat = np.concatenate([np.asarray(inside[name]["a"]).reshape(6, 5),
                                   np.asarray(inside[name]["b"])])
            np.testing.assert_allclose(flat, ref.last[name], rtol=1e-10, atol=1e-12)
        _, state = tx.update(grads, state)


def test_adam_meta_params_have_constant_adam_decay_rates():
    family = tasks.random_quadratics(5)
    tr = trace_hyperadam(ha.adam_meta_params(4), family, jax.random.key(0), steps=12)
    assert tr["beta"].shape == tr["gamma"].shape == tr["rho"].shape == (12, 4)
    np.testing.assert_allclose(tr["beta"], 0.9, rtol=1e-6)
    np.testing.assert_allclose(tr["gamma"], 0.999, rtol=1e-6)
    np.testing.assert_allclose(tr["rho"], np.tile([1.0, 0, 0, 0], (12, 1)), atol=1e-7)
    # The recorded losses are the ones the same run without recording sees.
    losses = meta.train(ha.hyperadam(0.005, ha.adam_meta_params(4)), family,
                         jax.random.key(0), 12)[0]
    np.testing.assert_allclose(tr["loss"], losses, rtol=1e-6)
    assert np.all(tr["step_norm"] > 0)


def test_plot_trace(tmp_path):
    family = tasks.random_quadratics(3)
    traces = {name: trace_hyperadam(theta, family, jax.random.key(0), steps=5)
              for name, theta in [("adam", ha.adam_meta_params(2)),
                                  ("paper init", ha.init_meta_params(jax.random.key(2), 2))]}
    fig = plot_trace(traces, str(tmp_path / "trace.png"))
    assert (tmp_path / "trace.png").stat().st_size > 0 and len(fig.axes) == 8


def test_library_plots_leave_the_callers_matplotlib_backend_alone(tmp_path):
    """A notebook's inline backend must survive the package writing its PNGs."""
    import matplotlib

    from hyperadam_optax import evaluation
    from hyperadam_optax.cli import demo
    from hyperadam_optax.meta import run as meta_train_run

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        curves = np.ones((2, 5))
        demo.plot_curves({"a": curves}, str(tmp_path / "d.png"))
        evaluation.plot_curves({"t": {"a": evaluation.RunResult(np.ones(2), curves)}},
                               str(tmp_path / "e.png"))
        meta_train_run.plot_metrics([{"step": 1, "meta_loss": 1.0},
                                     {"step": 1, "validation_loss": 1.0}], str(tmp_path / "m.png"))
        assert matplotlib.get_backend() == "svg"
        assert all((tmp_path / f).stat().st_size > 0 for f in ("d.png", "e.png", "m.png"))
    finally:
        matplotlib.use(before)


def test_the_meta_training_plot_shows_the_runs_metrics(tmp_path):
    """Each line of meta_loss.png is the metrics it claims: the meta-loss per step, its
    running mean over a fiftieth of the run, the validation rows; the PNG has its size."""
    import matplotlib.image

    from hyperadam_optax.meta.plots import metrics_figure, plot_metrics

    steps = np.arange(1, 201)
    history = [{"step": int(s), "meta_loss": float(np.sin(s))} for s in steps]
    history += [{"step": s, "validation_loss": 1.0 / (1 + s)} for s in (0, 100, 200)]
    lines = {ln.get_label(): ln for ln in metrics_figure(history).axes[0].get_lines()}
    np.testing.assert_array_equal(lines["meta-loss (per meta-step)"].get_ydata(), np.sin(steps))
    mean = lines["meta-loss (running mean of 4)"]
    np.testing.assert_array_equal(mean.get_xdata(), steps[3:])
    np.testing.assert_allclose(mean.get_ydata()[0], np.sin(steps[:4]).mean())
    np.testing.assert_allclose(lines["validation loss"].get_ydata(), [1.0, 1 / 101, 1 / 201])
    plot_metrics(history, str(tmp_path / "m.png"))
    assert matplotlib.image.imread(tmp_path / "m.png").shape[:2] == (495, 770)
