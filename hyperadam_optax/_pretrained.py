"""Meta-parameters shipped inside the package (``hyperadam_optax/pretrained/``).

Each learned optimizer ``name`` has ``pretrained/{name}.npz`` (written by
:func:`~hyperadam_optax.save_meta_params`, read without pickle) and ``pretrained/{name}.json``,
its card: the command that meta-trained it, the run's configuration, meta-steps, wall time,
seed, commit, the checkpoint chosen by validation and the evaluation scores.
"""

from __future__ import annotations

import json
from importlib import resources

#: The shipped learned optimizers (file stems in ``pretrained/``).
PRETRAINED = ("hyperadam", "rnnprop", "dm_optimizer")


class PretrainedWeightsUnavailableError(FileNotFoundError):
    """Raised when a learned optimizer has no pretrained meta-parameters in this package."""


def _check_name(name: str) -> None:
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained optimizer {name!r}; expected one of {PRETRAINED}")


def pretrained_path(name: str, suffix: str = ".npz"):
    """The packaged file ``pretrained/{name}{suffix}`` (a ``Traversable``)."""
    return resources.files("hyperadam_optax") / "pretrained" / f"{name}{suffix}"


def load_pretrained(name: str):
    """Load the shipped meta-parameters of optimizer ``name`` (offline, no pickle).

    ``name``: ``"hyperadam"``, ``"rnnprop"`` or ``"dm_optimizer"``.
    """
    from hyperadam_optax._serialization import load_meta_params

    _check_name(name)
    path = pretrained_path(name)
    if not path.is_file():
        raise PretrainedWeightsUnavailableError(
            f"this installation of hyperadam_optax ships no pretrained {name!r} meta-parameters "
            f"({path} is missing). Pass meta_params explicitly, e.g. "
            "init_meta_params(jax.random.key(0), init='adam') for the Adam warm start, or "
            "load_meta_params(path) for weights you meta-trained."
        )
    with resources.as_file(path) as p:
        return load_meta_params(p)


def pretrained_card(name: str) -> dict:
    """The JSON card of the shipped meta-parameters of ``name`` (how they were made, scores)."""
    _check_name(name)
    path = pretrained_path(name, ".json")
    if not path.is_file():
        raise PretrainedWeightsUnavailableError(f"no card for pretrained {name!r} ({path})")
    return json.loads(path.read_text())
