"""Meta-training throughput across processes (``jax.distributed``) against one process.

Run: python benchmarks/processes.py [--meta-steps 40] [--task digits-mlp]

Runs the same PES meta-training (``--num-particles 8``) as: one process on 1, 2 and 4 CPU
devices, and 2 local processes of 1 and 2 devices each (joined by ``--coordinator``), and
prints one table of meta-steps per second (median over the meta-steps after the first 5,
which include compilation) with each layout's ratio to one process of one device. On a
machine whose cores all processes share, the table measures what the multi-process runtime
costs, not how it scales: devices here are slices of the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile

CLI = [sys.executable, "-m", "hyperadam_optax.cli"]


def _run(out: str, processes: int, devices: int, args: list[str]) -> float:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    joined = [] if processes == 1 else ["--coordinator", f"localhost:{port}",
                                        "--num-processes", str(processes)]
    procs = [subprocess.Popen([*CLI, *args, "--out-dir", out, *joined,
                               *([] if processes == 1 else ["--process-id", str(i)])],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for i in range(processes)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise RuntimeError(err[-2000:])
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if "steps_per_s" in line]
    return statistics.median(r["steps_per_s"] for r in rows[5:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meta-steps", type=int, default=40)
    p.add_argument("--task", default="digits-mlp")
    args = p.parse_args(argv)
    run = ["meta-train", "--task", args.task, "--estimator", "pes", "--num-particles", "8",
           "--unroll", "20", "--trajectory", "100", "--meta-loss", "log_ratio",
           "--meta-steps", str(args.meta_steps), "--checkpoint-every", str(args.meta_steps),
           "--validation-tasks", "2", "--no-progress"]
    layouts = [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2)]
    with tempfile.TemporaryDirectory() as tmp:
        rates = {(n, d): _run(os.path.join(tmp, f"{n}x{d}"), n, d, run) for n, d in layouts}
    print(f"PES meta-training, {args.task}, 8 pairs, {os.cpu_count()} CPU cores\n")
    print("| processes x devices each | total devices | meta-steps/s | vs 1 x 1 |")
    print("|---|---:|---:|---:|")
    for (n, d), rate in rates.items():
        print(f"| {n} x {d} | {n * d} | {rate:.2f} | {rate / rates[(1, 1)]:.2f} |")


if __name__ == "__main__":
    main()
