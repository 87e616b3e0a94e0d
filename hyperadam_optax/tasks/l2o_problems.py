"""The L2O-Scale problem set (Wichrowska et al. 2017, Sec. 4.1; the code's ``problem_sets.py``):
many cheap, diverse task families for meta-training.

Each function returns one :class:`~hyperadam_optax.tasks.base.TaskFamily` (one shape, so one
vmap and one compiled program). Gradient noise ``sigma · N(0, 1)`` enters through
:func:`noisy_gradient_term`, which leaves the loss value clean (the meta-objective sees
the true loss, the optimizer a noisy gradient, as in the code).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from hyperadam_optax.tasks.base import TaskFamily


def noisy_gradient_term(x: jax.Array, noise: jax.Array) -> jax.Array:
    """``<noise, x>`` minus its value: adds ``noise`` to the gradient, 0 to the loss."""
    term = jnp.vdot(noise, x)
    return term - jax.lax.stop_gradient(term)


def _vector_family(name: str, dim: int, sample_task, objective, noise: float | None,
                   init=None) -> TaskFamily:
    """A family over one parameter vector ``x`` of ``dim`` with gradient noise ``noise``
    (``None``: each task's own level, ``task["noise"]``)."""

    def sample_batch(key, task):
        level = task["noise"] if noise is None else noise
        return level * jax.random.normal(key, (dim,))

    return TaskFamily(
        name=name,
        sample_task=sample_task,
        init=init or (lambda key, task: {"x": jax.random.normal(key, (dim,))}),
        sample_batch=sample_batch,
        loss=lambda params, batch, task: (objective(params["x"], task)
                                          + noisy_gradient_term(params["x"], batch)),
    )


def quadratic(dim: int, noise: float = 0.0) -> TaskFamily:
    """``0.5 ||W x - y||²`` with ``W, y ~ N(0, 1)``, ``x0 ~ N(0, 1)`` (the code's Quadratic)."""

    def sample_task(key):
        kw, ky = jax.random.split(key)
        return {"w": jax.random.normal(kw, (dim, dim)), "y": jax.random.normal(ky, (dim,))}

    def objective(x, task):
        r = task["w"] @ x - task["y"]
        return 0.5 * jnp.sum(r * r)

    return _vector_family(f"l2o-quadratic{dim}-noise{noise:g}", dim, sample_task, objective,
                          noise)


#: The code's Bowl problems: (condition k, rotation angle).
BOWLS = ((0.1, 0.0), (1.0, 0.0), (5.0, 0.0), (5.0, math.pi / 4))


def bowls(noise_levels: tuple[float, ...] = (0.0, 0.1)) -> TaskFamily:
    """``0.5 ||sqrt(diag(k, 1)) R(angle) x||²`` in 2-D, ``x0 ~ N(0, 1)`` (the code's Bowl), with
    ``(k, angle)`` drawn per task from :data:`BOWLS` and the gradient noise from
    ``noise_levels``: one family, one vmap."""
    mats = jnp.stack([jnp.array([[math.sqrt(k), 0.0], [0.0, 1.0]])
                      @ jnp.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
                      for k, a in BOWLS])
    levels = jnp.array(noise_levels)

    def sample_task(key):
        kb, kn = jax.random.split(key)
        return {"m": mats[jax.random.randint(kb, (), 0, len(BOWLS))],
                "noise": levels[jax.random.randint(kn, (), 0, len(noise_levels))]}

    return _vector_family("l2o-bowls", 2, sample_task,
                          lambda x, task: 0.5 * jnp.sum(jnp.square(task["m"] @ x)), None)


def norm_problem(dim: int, power: float = 1.0) -> TaskFamily:
    """The code's Norm problem: ``(Σ_i (|W x - y|_i + 1e-6)^p)^(1/p)``, ``W, y ~ N(0, 1)``."""

    def sample_task(key):
        kw, ky = jax.random.split(key)
        return {"w": jax.random.normal(kw, (dim, dim)), "y": jax.random.normal(ky, (dim,))}

    def objective(x, task):
        r = jnp.abs(task["w"] @ x - task["y"]) + 1e-6
        return jnp.sum(r ** power) ** (1.0 / power)

    return _vector_family(f"l2o-norm{dim}-p{power:g}", dim, sample_task, objective, 0.0)


def _rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def _ackley(x):
    return (-20 * jnp.exp(-0.2 * jnp.sqrt(0.5 * jnp.sum(x * x) + 1e-16))
            - jnp.exp(0.5 * jnp.sum(jnp.cos(2 * jnp.pi * x))) + jnp.e + 20)


def _beale(x):
    a, b = x[0], x[1]
    return ((1.5 - a + a * b) ** 2 + (2.25 - a + a * b ** 2) ** 2
            + (2.625 - a + a * b ** 3) ** 2)


def _booth(x):
    return (x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2


def _styblinski_tang(x):
    return 0.5 * jnp.sum(x ** 4 - 16 * x ** 2 + 5 * x) + 80


def _matyas(x):
    return 0.26 * jnp.sum(x * x) - 0.48 * x[0] * x[1]


def _branin(x):
    a, b = x[0], x[1]
    return ((b - 5.1 * a ** 2 / (4 * jnp.pi ** 2) + 5 * a / jnp.pi - 6) ** 2
            + 10 * (1 - 1 / (8 * jnp.pi)) * jnp.cos(a) + 10)


def _michalewicz(x, m: int = 5):
    i = jnp.arange(1, 3)
    return 2 - jnp.sum(jnp.sin(x) * jnp.sin(i * x ** 2 / jnp.pi) ** (2 * m))


def _log_sum_exp(x):
    a, b = x[0], x[1]
    return jnp.log(jnp.exp(a + 3 * b - 0.1) + jnp.exp(a - 3 * b - 0.1) + jnp.exp(-a - 0.1) + 1)


#: The 2-D test functions of the set: objective and the box the initial point is drawn from
#: (uniformly; ``None``: ``N(0, 1)``).
FUNCTIONS_2D = {
    "rosenbrock": (_rosenbrock, ((-5.0, 10.0), (-5.0, 10.0))),
    "ackley": (_ackley, ((-32.768, 32.768),) * 2),
    "beale": (_beale, ((-4.5, 4.5),) * 2),
    "booth": (_booth, ((-10.0, 10.0),) * 2),
    "styblinski-tang": (_styblinski_tang, ((-5.0, 5.0),) * 2),
    "matyas": (_matyas, ((-10.0, 10.0),) * 2),
    "branin": (_branin, ((-5.0, 10.0), (0.0, 15.0))),
    "michalewicz": (_michalewicz, ((0.0, math.pi),) * 2),
    "log-sum-exp": (_log_sum_exp, None),
}


def functions_2d(names: tuple[str, ...] = tuple(FUNCTIONS_2D),
                   noise_levels: tuple[float, ...] = (0.0, 1.0)) -> TaskFamily:
    """The 2-D test functions of :data:`FUNCTIONS_2D`, one drawn per task (``lax.switch``:
    one family, one vmap), started uniformly in its box, with gradient noise drawn from
    ``noise_levels`` (the code has each plain and with noise 1)."""
    unknown = sorted(set(names) - set(FUNCTIONS_2D))
    if unknown or not names:
        raise ValueError(f"unknown test functions {unknown}; expected some of "
                         f"{sorted(FUNCTIONS_2D)}")
    fns = [FUNCTIONS_2D[n][0] for n in names]
    boxes = [FUNCTIONS_2D[n][1] or ((-1.0, 1.0),) * 2 for n in names]
    lo = jnp.array([[b[0] for b in box] for box in boxes])
    hi = jnp.array([[b[1] for b in box] for box in boxes])
    gaussian = jnp.array([FUNCTIONS_2D[n][1] is None for n in names])
    levels = jnp.array(noise_levels)

    def sample_task(key):
        kf, kn = jax.random.split(key)
        return {"which": jax.random.randint(kf, (), 0, len(names)),
                "noise": levels[jax.random.randint(kn, (), 0, len(noise_levels))]}

    def init(key, task):
        ku, kg = jax.random.split(key)
        i = task["which"]
        uniform = jax.random.uniform(ku, (2,), minval=lo[i], maxval=hi[i])
        return {"x": jnp.where(gaussian[i], jax.random.normal(kg, (2,)), uniform)}

    return _vector_family("l2o-test-functions", 2, sample_task,
                          lambda x, task: jax.lax.switch(task["which"], fns, x), None, init=init)


def logistic_regression(features: int, samples: int = 1000, batch: int = 100,
                        noise: float = 0.0) -> TaskFamily:
    """Two-class logistic regression (the code's classification problems): ``samples`` points
    ``~ N(0, 1)`` labelled by a random hyperplane with 10% label noise; sigmoid cross-entropy on
    a minibatch of ``batch`` plus ``1e-3 · mean(w²)``; ``noise``: extra gradient noise."""

    def sample_task(key):
        kx, kw, kf = jax.random.split(key, 3)
        x = jax.random.normal(kx, (samples, features))
        w = jax.random.normal(kw, (features,))
        flip = jax.random.bernoulli(kf, 0.1, (samples,))
        return {"x": x, "y": jnp.where(flip, x @ w <= 0, x @ w > 0).astype(jnp.float32)}

    def init(key, task):
        return {"w": 0.1 * jax.random.normal(key, (features,)), "b": jnp.zeros(())}

    def sample_batch(key, task):
        ki, kn = jax.random.split(key)
        idx = jax.random.randint(ki, (batch,), 0, samples)
        return {"idx": idx, "noise": noise * jax.random.normal(kn, (features,))}

    def loss(params, b, task):
        logits = task["x"][b["idx"]] @ params["w"] + params["b"]
        y = task["y"][b["idx"]]
        ce = jnp.mean(jnp.maximum(logits, 0) - logits * y + jnp.log1p(jnp.exp(-jnp.abs(logits))))
        return (ce + 1e-3 * jnp.mean(params["w"] ** 2)
                + noisy_gradient_term(params["w"], b["noise"]))

    return TaskFamily(f"l2o-logistic{features}-batch{batch}-noise{noise:g}", sample_task, init,
                      sample_batch, loss)


def teacher_mlp_regression(student: tuple[int, ...], *, inputs: int = 8,
                           teacher_depth: int = 6, teacher_width: int = 16,
                           samples: int = 1000, batch: int = 50) -> TaskFamily:
    """A sigmoid MLP ``inputs-...-1`` (hidden sizes ``student``) fitting, by mean squared error,
    the outputs of a random ``teacher_depth``-layer ReLU net on ``samples`` inputs ``~ N(0, 1)``
    (the code's sigmoid MLPs fitting a random ReLU net); targets standardised per task."""
    sizes = (inputs, *student, 1)

    def sample_task(key):
        kx, kt = jax.random.split(key)
        x = jax.random.normal(kx, (samples, inputs))
        h = x
        dims = (inputs,) + (teacher_width,) * (teacher_depth - 1) + (1,)
        for i, k in enumerate(jax.random.split(kt, teacher_depth)):
            h = h @ (jax.random.normal(k, (dims[i], dims[i + 1])) * math.sqrt(2.0 / dims[i]))
            if i < teacher_depth - 1:
                h = jax.nn.relu(h)
        y = h[:, 0]
        return {"x": x, "y": (y - jnp.mean(y)) / (jnp.std(y) + 1e-6)}

    def init(key, task):
        keys = jax.random.split(key, len(sizes) - 1)
        return [{"w": jax.random.normal(k, (a, b)) / math.sqrt(a), "b": jnp.zeros((b,))}
                for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def loss(params, idx, task):
        h = task["x"][idx]
        for i, layer in enumerate(params):
            h = h @ layer["w"] + layer["b"][None, :]
            if i < len(params) - 1:
                h = jax.nn.sigmoid(h)
        return jnp.mean((h[:, 0] - task["y"][idx]) ** 2)

    return TaskFamily(
        f"l2o-teacher-mlp{'-'.join(map(str, sizes))}", sample_task, init,
        lambda key, task: jax.random.randint(key, (batch,), 0, samples), loss)
