"""Effect of ``state_dtype=jnp.bfloat16`` on HyperAdam: accuracy and speed, in one run.

Run: python benchmarks/state_dtype.py

Trains the paper's MLP (784-20-10 sigmoid, batch 128, embedded MNIST) for 200 steps x 10
paired runs with float32 and bfloat16 state, for two sets of meta-parameters, and times
one update at 1M coordinates.
"""

import jax
import jax.numpy as jnp
import numpy as np
import update_floor  # benchmarks/ is on sys.path when run as a script

import hyperadam_optax as ha
from hyperadam_optax.cli.demo import training_curves
from hyperadam_optax.tasks.data import load_mnist_5k


def main():
    data = load_mnist_5k()
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    print("| meta-params | state dtype | final loss (mean of last 10 steps, 10 runs) | "
          "ms / update at 1M |")
    print("|---|---|---:|---:|")
    for init in ("adam", "paper"):
        theta = ha.init_meta_params(jax.random.key(0), 20, init)
        for dtype in (jnp.float32, jnp.bfloat16):
            tx = ha.hyperadam(0.005, theta, state_dtype=dtype)
            curves = training_curves(tx, x, y, steps=200, runs=10, seed=0)
            final = curves[:, -10:].mean(axis=1)
            ms = update_floor.measure(tx, {"w": jnp.zeros((1 << 20,))}, repeats=5)["update"] * 1e3
            print(f"| {init} | {jnp.dtype(dtype).name} | {final.mean():.4f} ± "
                  f"{final.std(ddof=1) / np.sqrt(len(final)):.4f} | {ms:.1f} |")


if __name__ == "__main__":
    main()
