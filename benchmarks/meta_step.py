"""Speed of one meta-step (forward + backward + outer update) of each learned optimizer.

Run: python benchmarks/meta_step.py [--optimizers hyperadam,rnnprop,dm] [--batch-sizes 1,4,8]

Each optimizer runs on its paper's training problem (HyperAdam, RNNprop: MNIST MLP 784-20-10
under Random Scaling plus the convex term; DM: the plain MLP), 20-step truncations. Each row
runs in a fresh subprocess so that its compile time and peak memory (max RSS) are its own. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(optimizer: str, batch: int, repeats: int, remat: bool) -> dict:
    import jax

    from hyperadam_optax import meta_train as mt
    from hyperadam_optax.data import load_mnist_5k
    from hyperadam_optax.registry import make_optimizer, make_task

    d = load_mnist_5k()
    opt = make_optimizer(optimizer)
    family = make_task(opt.default_task, (d.x, d.y))
    config = mt.MetaTrainConfig(num_tasks=batch, remat=remat, meta_lr=opt.default_meta_lr)
    state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
    step = mt.make_meta_step(opt, family, config)
    t0 = time.perf_counter()
    compiled = step.lower(state).compile()
    compile_s = time.perf_counter() - t0
    state, _ = compiled(state)
    jax.block_until_ready(state)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, _ = compiled(state)
        jax.block_until_ready(state)
        best = min(best, time.perf_counter() - t0)
    task_steps = batch * config.unroll
    return {"optimizer": optimizer, "task": opt.default_task, "batch": batch, "remat": remat,
            "compile_s": compile_s, "meta_step_s": best,
            "ms_per_task_step": 1e3 * best / task_steps, "task_steps_per_s": task_steps / best,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--optimizers", default="hyperadam,rnnprop,dm")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-remat-too", action="store_true",
                        help="also time remat=False (store every intermediate)")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single:
        optimizer, batch, remat = args.single.split(":")
        print(json.dumps(measure(optimizer, int(batch), args.repeats, remat == "1")))
        return
    import jax

    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; unroll 20, J = H = 20; "
          "each optimizer on its paper's training problem")
    print("| optimizer | task | B | remat | compile s | meta-step s | ms / task-step "
          "| task-steps / s | peak RSS MiB |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    modes = ["1", "0"] if args.no_remat_too else ["1"]
    for opt in args.optimizers.split(","):
        for b in args.batch_sizes.split(","):
            for remat in modes:
                out = subprocess.run([sys.executable, __file__, "--single", f"{opt}:{b}:{remat}",
                                      "--repeats", str(args.repeats)], capture_output=True,
                                     text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {r['optimizer']} | {r['task']} | {r['batch']} "
                      f"| {'yes' if r['remat'] else 'no'} | {r['compile_s']:.1f} "
                      f"| {r['meta_step_s']:.3f} | {r['ms_per_task_step']:.1f} "
                      f"| {r['task_steps_per_s']:.0f} | {r['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
