"""The one loader of the meta-parameters shipped inside the package (``hyperadam_optax/pretrained/``).

Each learned optimizer of the registry, by its canonical name, may ship
``pretrained/{name}.npz`` (written by :func:`~hyperadam_optax.save_meta_params`, read without
pickle) and ``pretrained/{name}.json``, its card: the commands that meta-trained it, the
run's configuration, meta-steps, wall time, seed, commit, the checkpoint chosen by validation
and the evaluation scores.

The optimizer modules do no file IO; the package-level aliases :func:`hyperadam`,
:func:`rnnprop` and :func:`dm_optimizer` defined here are theirs with one addition:
``meta_params=None`` loads the shipped weights.
"""

from __future__ import annotations

import functools
import inspect
import json
from importlib import resources

from hyperadam_optax.io.files import load_meta_params, make_kwargs_of
from hyperadam_optax.optimizers.registry import OPTIMIZERS, get_optimizer

#: The learned optimizers that may ship weights (file stems in ``pretrained/``).
PRETRAINED = tuple(OPTIMIZERS)


class PretrainedWeightsUnavailableError(FileNotFoundError):
    """Raised when a learned optimizer has no pretrained meta-parameters in this package."""


def _canonical(name: str) -> str:
    try:
        return get_optimizer(name).name
    except ValueError:
        raise ValueError(f"unknown pretrained optimizer {name!r}; expected one of {PRETRAINED}"
                         ) from None


def pretrained_path(name: str, suffix: str = ".npz"):
    """The packaged file ``pretrained/{name}{suffix}`` (a ``Traversable``)."""
    return resources.files("hyperadam_optax") / "pretrained" / f"{_canonical(name)}{suffix}"


def load_pretrained(name: str, *, with_metadata: bool = False):
    """Load the shipped meta-parameters of optimizer ``name`` (offline, no pickle).

    ``name``: ``"hyperadam"``, ``"rnnprop"`` or ``"dm_optimizer"`` (or an alias, ``"dm"``).
    ``with_metadata``: return ``(meta_params, card)``, as ``load_meta_params`` does; the
    card's ``make_kwargs`` (if any) are the alias arguments the weights were made for, which
    the package-level aliases apply.
    """
    path = pretrained_path(name)
    if not path.is_file():
        raise PretrainedWeightsUnavailableError(
            f"this installation of hyperadam_optax ships no pretrained {name!r} meta-parameters "
            f"({path} is missing). Pass meta_params explicitly, e.g. "
            "init_meta_params(jax.random.key(0), init='adam') for the Adam warm start, or "
            "load_meta_params(path) for weights you meta-trained."
        )
    with resources.as_file(path) as p:
        return load_meta_params(p, with_metadata=with_metadata)


def pretrained_card(name: str) -> dict:
    """The JSON card of the shipped meta-parameters of ``name`` (how they were made, scores)."""
    path = pretrained_path(name, ".json")
    if not path.is_file():
        raise PretrainedWeightsUnavailableError(f"no card for pretrained {name!r} ({path})")
    return json.loads(path.read_text())


def _with_shipped_weights(name: str):
    """The registry alias of ``name`` whose ``meta_params=None`` loads the shipped weights
    (same signature and docstring as the optimizer module's alias)."""
    alias = get_optimizer(name).make
    signature = inspect.signature(alias)

    @functools.wraps(alias)
    def with_shipped(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        if bound.arguments.get("meta_params") is None:
            theta, card = load_pretrained(name, with_metadata=True)
            bound.arguments["meta_params"] = theta
            for key, value in make_kwargs_of(card).items():
                bound.arguments.setdefault(key, value)
        return alias(*bound.args, **bound.kwargs)

    with_shipped.__doc__ = (f"{alias.__doc__}\n\n    ``meta_params=None`` loads the pretrained "
                            f"weights shipped in the package (``load_pretrained({name!r})``) "
                            "with the alias arguments they were made for (their card's "
                            "``make_kwargs``) unless given.")
    return with_shipped


hyperadam = _with_shipped_weights("hyperadam")
rnnprop = _with_shipped_weights("rnnprop")
dm_optimizer = _with_shipped_weights("dm_optimizer")
l2o_scale = _with_shipped_weights("l2o_scale")
