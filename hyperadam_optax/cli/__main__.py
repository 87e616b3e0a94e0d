"""``python -m hyperadam_optax.cli``: the same as the ``hyperadam-optax`` command."""

from hyperadam_optax.cli.main import run

raise SystemExit(run())
