"""Speed of one meta-step (forward + backward + outer update) of each learned optimizer.

Run: python benchmarks/meta_step.py [--optimizers hyperadam,rnnprop,dm,l2o_scale] [--batch-sizes 1,4,8]
[--ablations]

Each optimizer runs on its paper's training problem (HyperAdam, RNNprop: MNIST MLP 784-20-10
under Random Scaling plus the convex term; DM: the plain MLP), 20-step truncations. Each row
runs in a fresh subprocess so that its compile time and peak memory (max RSS) are its own
(``chunk``: task slots vmapped together, ``MetaTrainConfig.task_chunk``). With ``--ablations``
each row also times, in turns with the default in the same process, all B tasks in one vmap
and the meta-step compiled without ``meta.meta_step.cpu_compiler_options``: ratios > 1 mean the
default is faster. Prints one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time


def _compile(opt, family, config, compiler_options=True):
    import jax

    from hyperadam_optax import meta as mt
    from hyperadam_optax.meta import meta_step

    default_options = meta_step.cpu_compiler_options
    if not compiler_options:
        meta_step.cpu_compiler_options = lambda: None
    try:
        state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
        t0 = time.perf_counter()
        step = mt.make_meta_step(opt, family, config).lower(state).compile()
        return step, state, time.perf_counter() - t0
    finally:
        meta_step.cpu_compiler_options = default_options


def _best_of(runs, repeats):
    """Best wall time of each compiled meta-step, timed in turns (runs: name -> [step, state])."""
    import jax

    best = dict.fromkeys(runs, float("inf"))
    for run in runs.values():  # warm-up
        run[1], _ = run[0](run[1])
        jax.block_until_ready(run[1])
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run[1], _ = run[0](run[1])
            jax.block_until_ready(run[1])
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def measure(optimizer: str, batch: int, repeats: int, remat: bool, ablations: bool) -> dict:
    from hyperadam_optax import meta as mt
    from hyperadam_optax.meta.sharding import resolve_task_chunk
    from hyperadam_optax.tasks import make_task
    from hyperadam_optax.tasks.data import load_mnist_5k

    d = load_mnist_5k()
    opt = mt.learned_optimizer(optimizer)
    family = make_task(opt.default_task, (d.x, d.y))
    config = mt.MetaTrainConfig(num_tasks=batch, remat=remat, meta_lr=opt.default_meta_lr)
    step, state, compile_s = _compile(opt, family, config)
    runs = {"default": [step, state]}
    best = _best_of(runs, repeats)["default"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    task_steps = batch * config.unroll
    row = {"optimizer": optimizer, "task": opt.default_task, "batch": batch, "remat": remat,
           "chunk": resolve_task_chunk(config), "compile_s": compile_s, "meta_step_s": best,
           "ms_per_task_step": 1e3 * best / task_steps, "task_steps_per_s": task_steps / best,
           "peak_rss_mib": peak}
    if ablations:  # each variant's time over the default's, measured in turns
        if batch > 1:
            vmap_all = dataclasses.replace(config, task_chunk=batch)
            runs["one vmap"] = list(_compile(opt, family, vmap_all)[:2])
        runs["no CPU options"] = list(_compile(opt, family, config, compiler_options=False)[:2])
        times = _best_of(runs, repeats)
        row["ratios"] = {k: v / times["default"] for k, v in times.items() if k != "default"}
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--optimizers", default="hyperadam,rnnprop,dm,l2o_scale")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-remat-too", action="store_true",
                        help="also time remat=False (store every intermediate)")
    parser.add_argument("--ablations", action="store_true",
                        help="also time all B tasks in one vmap and the meta-step compiled "
                             "without meta.meta_step.cpu_compiler_options (ratios to the default)")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single:
        optimizer, batch, remat = args.single.split(":")
        print(json.dumps(measure(optimizer, int(batch), args.repeats, remat == "1",
                                 args.ablations)))
        return
    import jax

    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; unroll 20, J = H = 20; "
          "each optimizer on its paper's training problem")
    print("| optimizer | task | B | chunk | remat | compile s | meta-step s | ms / task-step "
          "| task-steps / s | peak RSS MiB |" + (" one vmap / default | no CPU options / "
                                                  "default |" if args.ablations else ""))
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if args.ablations
                                                               else ""))
    modes = ["1", "0"] if args.no_remat_too else ["1"]
    for opt in args.optimizers.split(","):
        for b in args.batch_sizes.split(","):
            for remat in modes:
                out = subprocess.run([sys.executable, __file__, "--single", f"{opt}:{b}:{remat}",
                                      "--repeats", str(args.repeats)]
                                     + (["--ablations"] if args.ablations else []),
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                line = (f"| {r['optimizer']} | {r['task']} | {r['batch']} | {r['chunk']} "
                        f"| {'yes' if r['remat'] else 'no'} | {r['compile_s']:.1f} "
                        f"| {r['meta_step_s']:.3f} | {r['ms_per_task_step']:.1f} "
                        f"| {r['task_steps_per_s']:.0f} | {r['peak_rss_mib']:.0f} |")
                if args.ablations:
                    ratios = r["ratios"]
                    line += "".join(f" {ratios[k]:.2f} |" if k in ratios else " - |"
                                    for k in ("one vmap", "no CPU options"))
                print(line)


if __name__ == "__main__":
    main()
