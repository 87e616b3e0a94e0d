"""The paper's MLP optimizee (784-20-10 sigmoid by default): pure functions and task families."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from hyperadam_optax.tasks.base import TaskFamily

ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "tanh": jnp.tanh,
    # Not in the paper's tables: validation and meta-training MLPs (VALIDATION_ACTIVATIONS).
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "gelu": jax.nn.gelu,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.1),
}


def init_mlp(key: jax.Array, sizes: Sequence[int] = (784, 20, 10), std: float = 0.1) -> dict:
    """Weights and biases ``~ N(0, std²)`` (the authors' code uses std 0.1 for both)."""
    params = {}
    keys = jax.random.split(key, 2 * (len(sizes) - 1))
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"layer{i}"] = {
            "w": std * jax.random.normal(keys[2 * i], (n_in, n_out)),
            "b": std * jax.random.normal(keys[2 * i + 1], (n_out,)),
        }
    return params


def mlp_logits(params: dict, x: jax.Array, activation: str = "sigmoid") -> jax.Array:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    act = ACTIVATIONS[activation]
    n_layers = len(params)
    for i in range(n_layers):
        layer = params[f"layer{i}"]
        x = x @ layer["w"] + layer["b"][None, :]
        if i < n_layers - 1:
            x = act(x)
    return x


def mlp_loss(params: dict, x: jax.Array, y: jax.Array, activation: str = "sigmoid") -> jax.Array:
    """Mean softmax cross-entropy over the batch."""
    logits = mlp_logits(params, x, activation)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def mnist_mlp(x: jax.Array, y: jax.Array, *, sizes=(784, 20, 10), activation: str = "sigmoid",
              batch_size: int = 128, init_std: float = 0.1) -> TaskFamily:
    """The plain MLP on images ``x`` (rows) with labels ``y``; one fixed task."""
    return image_mlp(x, y, sizes=sizes, activation=activation, batch_size=batch_size,
                     init_std=init_std, dataset="mnist", default_sizes=(784, 20, 10))


def digits_mlp(*, sizes=(64, 32, 10), activation: str = "relu", batch_size: int = 128,
               init_std: float = 0.1) -> TaskFamily:
    """An MLP on scikit-learn's 1,797 8x8 digits (a cheap meta-training task: 2,410
    parameters at the default 64-32-10)."""
    from hyperadam_optax.tasks.data import load_digits

    d = load_digits()
    return image_mlp(d.x, d.y, sizes=sizes, activation=activation, batch_size=batch_size,
                     init_std=init_std, dataset="digits", default_sizes=(64, 32, 10))


def image_mlp(x: jax.Array, y: jax.Array, *, sizes, activation: str, batch_size: int,
              init_std: float, dataset: str, default_sizes) -> TaskFamily:
    """The MLP ``sizes`` on images ``x`` (rows) with labels ``y``: minibatches drawn on device;
    named ``{dataset}-mlp-{activation}[-sizes]-std..-n..`` (the tuning cache's key)."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)

    def sample_batch(key, task):
        idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
        return x[idx], y[idx]

    shape = "" if tuple(sizes) == tuple(default_sizes) else "-" + "-".join(map(str, sizes))
    return TaskFamily(
        # The name identifies the task (tuning cache): architecture, init and data size.
        name=f"{dataset}-mlp-{activation}{shape}-std{init_std:g}-n{x.shape[0]}",
        sample_task=lambda key: {},
        init=lambda key, task: init_mlp(key, sizes, init_std),
        sample_batch=sample_batch,
        loss=lambda params, batch, task: mlp_loss(params, *batch, activation),
        logits=lambda params, inputs: mlp_logits(params, inputs, activation),
    )


#: Activations of the validation MLPs (and of ``mnist-mlp-mix``). Only sigmoid is also a Table 1
#: activation, and validation runs it on other seeds; ReLU, ELU and tanh are left out.
VALIDATION_ACTIVATIONS = ("sigmoid", "softplus", "silu", "gelu", "leaky_relu")


def mnist_mlp_mixture(x: jax.Array, y: jax.Array,
                      activations: tuple[str, ...] = VALIDATION_ACTIVATIONS,
                      **kwargs) -> TaskFamily:
    """The MLP of :func:`mnist_mlp` whose hidden activation is drawn uniformly per task from
    ``activations`` (``task = {"activation": index}``; ``lax.switch`` picks it, so a batch of
    tasks with different activations still ``vmap``-s)."""
    members = [mnist_mlp(x, y, activation=a, **kwargs) for a in activations]

    def loss(params, batch, task):
        return jax.lax.switch(task["activation"], [m.loss for m in members], params, batch, {})

    return TaskFamily(
        # e.g. mnist-mlp-mix-sigmoid-softplus-silu-gelu-leaky_relu-std0.1-n4000
        name=members[0].name.replace(f"-{activations[0]}", "-mix-" + "-".join(activations), 1),
        sample_task=lambda key: {"activation": jax.random.randint(key, (), 0, len(members))},
        init=lambda key, task: members[0].init(key, {}),
        sample_batch=lambda key, task: members[0].sample_batch(key, {}),
        loss=loss,
    )
