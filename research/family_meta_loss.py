"""A meta-training run's training meta-loss and meta-gradient norm per family of its ensemble.

Reads ``RUN/metrics.jsonl`` (or ``metrics.jsonl.gz``, how a long run's is kept) and prints, per
block of ``--block`` meta-steps, the mean over families of each family's mean meta-loss and
each family's mean (finite meta-steps only), then the median meta-gradient norm per family
over the whole run. Families are numbered as in the run's ``config.json`` ``ensemble``.

    python research/family_meta_loss.py research/runs/ha-paper-pes-ensemble-lr2e-5 --block 5000
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib

import numpy as np


def read_metrics(run: pathlib.Path) -> list[dict]:
    """The meta-step rows (those with a ``meta_loss``) of ``run``'s metrics."""
    plain, packed = run / "metrics.jsonl", run / "metrics.jsonl.gz"
    if plain.exists():
        lines = plain.read_text().splitlines()
    elif packed.exists():
        lines = gzip.decompress(packed.read_bytes()).decode().splitlines()
    else:
        raise SystemExit(f"{run} has no metrics.jsonl or metrics.jsonl.gz")
    return [row for row in map(json.loads, lines) if "meta_loss" in row]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=pathlib.Path)
    p.add_argument("--block", type=int, default=5000, help="meta-steps per block")
    args = p.parse_args(argv)
    rows = [r for r in read_metrics(args.run) if r["finite"] == 1]
    names = json.loads((args.run / "config.json").read_text()).get("ensemble", [])
    print("families: " + ", ".join(f"{i} {n}" for i, n in enumerate(names)))
    print("| meta-steps | family mean | " + " | ".join(map(str, range(len(names)))) + " |")
    for start in range(0, max(r["step"] for r in rows) + 1, args.block):
        by_family = collections.defaultdict(list)
        for r in rows:
            if start <= r["step"] < start + args.block:
                by_family[int(r["family"])].append(r["meta_loss"])
        means = {f: np.mean(v) for f, v in by_family.items()}
        print(f"| {start:,}-{start + args.block - 1:,} | {np.mean(list(means.values())):.2f} | "
              + " | ".join(f"{means[f]:.2f}" if f in means else "" for f in range(len(names)))
              + " |")
    norms = collections.defaultdict(list)
    for r in rows:
        norms[int(r["family"])].append(r["grad_norm"])
    print("median meta-gradient norm: " + ", ".join(
        f"{f} {np.median(v):.0f}" for f, v in sorted(norms.items())))


if __name__ == "__main__":
    main()
