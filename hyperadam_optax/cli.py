"""Command line: ``hyperadam-optax demo``."""

from __future__ import annotations

import argparse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from hyperadam_optax.demo import ADAM_LR

    parser = argparse.ArgumentParser(prog="hyperadam-optax",
                                     description="HyperAdam and learned optimizers for optax.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train the paper's MNIST MLP with HyperAdam and Adam")
    demo.add_argument("--steps", type=_positive_int, default=200)
    demo.add_argument("--runs", type=_positive_int, default=10,
                      help="independent runs (seeds) per optimizer, vmapped")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--hyperadam-lr", type=_positive_float, default=0.005)
    demo.add_argument("--adam-lr", type=_positive_float, default=ADAM_LR)
    demo.add_argument("--out", default="demo.png", help="loss-curve PNG ('' for none)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from hyperadam_optax.demo import run_demo

        run_demo(steps=args.steps, runs=args.runs, seed=args.seed, out=args.out or None,
                 hyperadam_lr=args.hyperadam_lr, adam_lr=args.adam_lr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
