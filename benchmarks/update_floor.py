"""Each learned optimizer's jitted update against the least any update must cost, measured in
the same process.

Run: python benchmarks/update_floor.py [--sizes 16384,1048576,10485760] [--tree] [--repeats 7]

The floor of an update is the larger of two, both measured here, never computed from a
datasheet:
- the **streaming pass**: one jitted, donated elementwise pass (read and write) over a float32
  array as large as the optimizer's state (its bytes per coordinate read off ``tx.init``),
  the memory traffic an update cannot avoid;
- the **FLOP floor**: the FLOPs XLA's cost analysis counts for the compiled update, at the
  measured rate of a large float32 matmul (generous: most of an update's FLOPs are
  elementwise, slower than a matmul's).
Times are medians of ``--repeats`` interleaved repeats (update, pass, update, pass, ...), the
state donated as in a training loop. ``--tree``: the parameters of a ~10.5M-parameter convnet
(3 conv kernels, 3 dense layers, their biases) instead of one leaf.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hyperadam_optax as ha

#: A convnet's parameters: many leaves of different shapes, about 10.5M coordinates.
TREE = {"conv1": (3, 3, 3, 64), "conv1_b": (64,), "conv2": (3, 3, 64, 128), "conv2_b": (128,),
        "conv3": (3, 3, 128, 256), "conv3_b": (256,), "dense1": (4096, 2048),
        "dense1_b": (2048,), "dense2": (2048, 1024), "dense2_b": (1024,), "dense3": (1024, 10),
        "dense3_b": (10,)}


def optimizers() -> dict[str, optax.GradientTransformation]:
    """The shipped weights (their sizes are the defaults'), and Adam for scale."""
    return {"adam": optax.adam(1e-3), "hyperadam": ha.hyperadam(), "rnnprop": ha.rnnprop(),
            "dm_optimizer": ha.dm_optimizer(), "l2o_scale": ha.l2o_scale()}


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


def state_bytes(tx, params) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(
        jax.eval_shape(tx.init, params)))


def measure(tx, params, repeats: int) -> tuple[float, float, float]:
    """(update s, streaming pass s, compiler FLOPs) for ``tx`` on ``params``."""
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(1), p.shape, p.dtype),
                         params)
    update = jax.jit(tx.update, donate_argnums=(1,))
    compiled = update.lower(grads, jax.eval_shape(tx.init, params), params).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float((cost or {}).get("flops", 0.0))
    stream = jax.jit(lambda x: x * 1.0001 + 0.5, donate_argnums=0)
    holder = {"state": tx.init(params),
              "x": jnp.ones((state_bytes(tx, params) // 4,), jnp.float32)}

    def run_update():
        u, holder["state"] = update(grads, holder["state"], params)
        jax.block_until_ready(u)

    def run_stream():
        holder["x"] = stream(holder["x"])
        jax.block_until_ready(holder["x"])

    run_update(), run_stream()  # compile and warm up
    times = {"update": [], "stream": []}
    for _ in range(repeats):
        for name, fn in (("update", run_update), ("stream", run_stream)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return statistics.median(times["update"]), statistics.median(times["stream"]), flops


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16384,1048576,10485760")
    parser.add_argument("--tree", action="store_true", help="also the ~10.5M convnet tree")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    layouts = {f"{int(n):,} in one leaf": {"w": jnp.zeros((int(n),), jnp.float32)}
               for n in args.sizes.split(",")}
    if args.tree:
        size = sum(int(np.prod(s)) for s in TREE.values())
        layouts[f"convnet tree, {size:,} in {len(TREE)} leaves"] = {
            k: jnp.zeros(s, jnp.float32) for k, s in TREE.items()}
    peak = matmul_flops_per_s()
    print(f"device: {jax.devices()[0].device_kind}; measured matmul rate "
          f"{peak / 1e9:.1f} GFLOP/s\n")
    print("| parameters | optimizer | state B/coord | update ms | streaming pass ms "
          "| FLOP floor ms | update / floor | update / adam |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, params in layouts.items():
        n = sum(x.size for x in jax.tree.leaves(params))
        adam = None
        for name, tx in optimizers().items():
            t, stream, flops = measure(tx, params, args.repeats)
            adam = t if name == "adam" else adam
            floor = max(stream, flops / peak)
            print(f"| {label} | {name} | {state_bytes(tx, params) / n:.0f} | {t * 1e3:.2f} "
                  f"| {stream * 1e3:.2f} | {flops / peak * 1e3:.2f} | {t / floor:.1f}x "
                  f"| {t / adam:.0f}x |", flush=True)


if __name__ == "__main__":
    main()
