"""The largest gradient entry each optimizer's float32 update survives.

    python benchmarks/overflow_threshold.py

For every optimizer (shipped weights, default arguments) and every gradient magnitude
10^k, k = 10..38: a leaf of 64 coordinates (one entry of size 10^k, the rest of size 1, signs
mixed), three updates from a fresh state; the first magnitude whose updates or state hold a
non-finite value is printed, for the updates and the state apart. README quotes this table.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hyperadam_optax as ha

OPTIMIZERS = {"optax.adam": lambda: optax.adam(1e-3), "hyperadam": ha.hyperadam,
              "rnnprop": ha.rnnprop, "dm_optimizer": ha.dm_optimizer, "l2o_scale": ha.l2o_scale}


def _finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree)
               if jnp.issubdtype(jnp.result_type(x), jnp.floating))


def finite_at(make, magnitude: float) -> tuple[bool, bool]:
    """Whether the three updates, and the state after them, are all finite."""
    tx = make()
    params = {"w": jnp.zeros((64,), jnp.float32)}
    signs = np.where(np.arange(64) % 2, 1.0, -1.0)
    grad = np.ones(64) * signs
    grad[0] = magnitude
    grads = {"w": jnp.asarray(grad, jnp.float32)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    updates_ok = True
    for _ in range(3):
        updates, state = update(grads, state, params)
        updates_ok = updates_ok and _finite(updates)
    return updates_ok, _finite(state)


def main() -> None:
    print("| optimizer | first gradient entry with a non-finite update | ... a non-finite state |")
    print("|---|---:|---:|")
    for name, make in OPTIMIZERS.items():
        checks = {k: finite_at(make, 10.0 ** k) for k in range(10, 39)}
        first = [next((f"1e{k}" for k, ok in checks.items() if not ok[i]), "none up to 1e38")
                 for i in (0, 1)]
        print(f"| {name} | {first[0]} | {first[1]} |")


if __name__ == "__main__":
    main()
