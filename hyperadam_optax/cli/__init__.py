"""The ``hyperadam-optax`` command line (demo, meta-train, evaluate, compare)."""

from hyperadam_optax.cli.main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
