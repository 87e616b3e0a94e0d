"""Each learned optimizer's jitted update against the least any update must cost, every floor
measured in the same process.

Run: python benchmarks/update_floor.py [--sizes 16384,1048576,10485760] [--tree]
[--repeats 7] [--state-dtype float32|bfloat16] [--optimizers adam,hyperadam,...]

An update's floor is the largest of three, each measured here, never read off a datasheet:
- **stream**: one jitted, donated elementwise pass (read and write) over a float32 array as
  large as the optimizer's state (its bytes per coordinate read off ``tx.init``): the memory
  traffic no update can avoid;
- **FLOP**: the FLOPs XLA's cost analysis counts for the compiled update, at the measured rate
  of a large float32 matmul (generous: an update's matmuls are skinny, its other FLOPs
  elementwise, both slower);
- **transcendental**: the transcendental functions XLA's cost analysis counts (tanh, exp,
  expm1, log, rsqrt, ...), at the measured time of one ``tanh`` in a chain of eight over a
  large array (the streaming pass's share subtracted).

Two diagnostics of where the rest goes: **XLA bytes / state bytes**, the memory traffic XLA's
cost analysis counts for the compiled update over the state's own (1 if the update streamed
its state once; "-" for a blocked update, whose loop the analysis counts once: its FLOPs and
transcendentals are read off the same function with whole leaves), and **fresh MiB**, the
memory the kernel handed the process during one update (minor page faults x 4 KiB): XLA:CPU
takes an update's temporaries from a new mapping on every call, which the kernel must zero.

Rows ``NAME:whole`` run NAME with ``block_rows=0`` (each leaf in one piece, the update before
in-place row blocks, :mod:`hyperadam_optax.optimizers.blocks`). Times are medians of
``--repeats`` interleaved repeats (update, pass, update, pass, ...), the state donated as in a
training loop. ``--tree``: also the parameters of a ~10.5M-parameter convnet (3 conv kernels,
3 dense layers, their biases) instead of one leaf.
"""

from __future__ import annotations

import argparse
import resource
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

#: ``NAME:whole`` is NAME with ``block_rows=0``: every leaf in one piece, as before blocks.
OPTIMIZERS = ("adam", "hyperadam", "hyperadam:whole", "rnnprop", "rnnprop:whole", "dm_optimizer",
              "dm_optimizer:whole", "l2o_scale", "l2o_scale:whole")


def make_optimizer(name: str, state_dtype=None) -> optax.GradientTransformation:
    """The shipped weights (their sizes are the defaults'), and Adam for scale."""
    if name == "adam":
        return optax.adam(1e-3)
    name, _, whole = name.partition(":")
    extra = {"block_rows": 0} if whole else {}
    return getattr(ha, name)(state_dtype=state_dtype, **extra)


def best_time(fn, *args, repeats: int) -> float:
    """Least wall time of ``repeats`` calls of ``fn(*args)`` after one warm-up call."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    return 2 * n**3 / best_time(jax.jit(lambda a: a @ a), a, repeats=repeats)


def _stream_pass():
    return jax.jit(lambda x: x * 1.0001 + 0.5, donate_argnums=0)


def stream_gbps(n: int = 1 << 26, repeats: int = 5) -> float:
    """Bytes read and written per second by a donated elementwise pass over ``n`` float32."""
    f, holder = _stream_pass(), [jnp.ones((n,), jnp.float32)]

    def run():
        holder[0] = f(holder[0])
        return holder[0]

    return 2 * 4 * n / best_time(run, repeats=repeats) / 1e9


def seconds_per_transcendental(n: int = 1 << 24, chain: int = 8, repeats: int = 5) -> float:
    """Time of one float32 ``tanh``: a donated chain of ``chain`` of them over ``n`` elements,
    less a donated streaming pass over the same array, per element and function."""
    def tanh_chain(x):
        for _ in range(chain):
            x = jnp.tanh(x)
        return x

    fns = {"chain": jax.jit(tanh_chain, donate_argnums=0), "stream": _stream_pass()}
    holder = {k: jnp.linspace(-2.0, 2.0, n, dtype=jnp.float32) for k in fns}

    def run(k):
        holder[k] = fns[k](holder[k])
        return holder[k]

    t = {k: best_time(run, k, repeats=repeats) for k in fns}
    return max(t["chain"] - t["stream"], 0.0) / (chain * n)


def state_bytes(tx, params) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(
        jax.eval_shape(tx.init, params)))


def cost_analysis(tx, params) -> dict:
    """XLA's cost analysis of the compiled update (it counts a loop's body once, not per trip:
    give it the whole-leaf update)."""
    update = jax.jit(tx.update, donate_argnums=(1,))
    cost = update.lower(params, jax.eval_shape(tx.init, params), params).compile().cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}


def measure(tx, params, repeats: int, whole_tx=None) -> dict:
    """Update and streaming-pass times (medians of interleaved repeats), XLA's cost analysis
    of the compiled update (of ``whole_tx``, the same function with every leaf in one piece,
    if given), and the memory freshly mapped during one update."""
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(1), p.shape, p.dtype),
                         params)
    update = jax.jit(tx.update, donate_argnums=(1,))
    cost = cost_analysis(whole_tx or tx, params)
    stream = _stream_pass()
    holder = {"state": tx.init(params),
              "x": jnp.ones((max(state_bytes(tx, params) // 4, 1),), jnp.float32)}

    def run_update():
        u, holder["state"] = update(grads, holder["state"], params)
        jax.block_until_ready(u)

    def run_stream():
        holder["x"] = stream(holder["x"])
        jax.block_until_ready(holder["x"])

    run_update(), run_stream()  # compile and warm up
    times, faults = {"update": [], "stream": []}, []
    for _ in range(repeats):
        for name, fn in (("update", run_update), ("stream", run_stream)):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            if name == "update":
                faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {"update": statistics.median(times["update"]),
            "stream": statistics.median(times["stream"]),
            "flops": float(cost.get("flops", 0.0)),
            "transcendentals": float(cost.get("transcendentals", 0.0)),
            "xla_bytes": float(cost.get("bytes accessed", 0.0)) if whole_tx is None else None,
            "fresh_mib": statistics.median(faults) * resource.getpagesize() / 2**20}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16384,1048576,10485760")
    parser.add_argument("--tree", action="store_true", help="also the ~10.5M convnet tree")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--state-dtype", default="float32", choices=("float32", "bfloat16"),
                        help="the learned optimizers' state dtype (Adam's stays float32)")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                        help="comma-separated, from " + ", ".join(OPTIMIZERS))
    args = parser.parse_args(argv)
    names = args.optimizers.split(",")
    unknown = sorted(set(names) - set(OPTIMIZERS))
    if unknown:
        parser.error(f"--optimizers: unknown {unknown}; expected names from {OPTIMIZERS}")
    layouts = {f"{int(n):,} in one leaf": {"w": jnp.zeros((int(n),), jnp.float32)}
               for n in args.sizes.split(",")}
    if args.tree:
        size = sum(int(np.prod(s)) for s in TREE.values())
        layouts[f"convnet tree, {size:,} in {len(TREE)} leaves"] = {
            k: jnp.zeros(s, jnp.float32) for k, s in TREE.items()}
    peak, per_transcendental = matmul_flops_per_s(), seconds_per_transcendental()
    print(f"device: {jax.devices()[0].device_kind}; matmul {peak / 1e9:.1f} GFLOP/s; "
          f"{per_transcendental * 1e9:.2f} ns per tanh; learned state {args.state_dtype}\n")
    print("| parameters | optimizer | state B/coord | update ms | stream ms | FLOP ms "
          "| transc. ms | update / floor | XLA bytes / state bytes | fresh MiB | update / adam |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    dtype = None if args.state_dtype == "float32" else jnp.bfloat16
    for label, params in layouts.items():
        n = sum(x.size for x in jax.tree.leaves(params))
        adam = None
        for name in names:
            tx = make_optimizer(name, dtype)
            blocked = name != "adam" and ":" not in name
            r = measure(tx, params, args.repeats,
                        make_optimizer(name + ":whole", dtype) if blocked else None)
            adam = r["update"] if name == "adam" else adam
            flop_floor = r["flops"] / peak
            transc_floor = r["transcendentals"] * per_transcendental
            floor = max(r["stream"], flop_floor, transc_floor)
            sb = state_bytes(tx, params)
            vs_adam = f"{r['update'] / adam:.0f}x" if adam else "-"
            traffic = "-" if r["xla_bytes"] is None else f"{r['xla_bytes'] / sb:.1f}"
            print(f"| {label} | {name} | {sb / n:.0f} | {r['update'] * 1e3:.2f} "
                  f"| {r['stream'] * 1e3:.2f} | {flop_floor * 1e3:.2f} | {transc_floor * 1e3:.2f} "
                  f"| {r['update'] / floor:.1f}x | {traffic} "
                  f"| {r['fresh_mib']:.0f} | {vs_adam} |", flush=True)


if __name__ == "__main__":
    main()
