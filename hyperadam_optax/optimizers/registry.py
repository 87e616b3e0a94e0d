"""The one registry of learned optimizers: CLI, evaluation, file IO and pretrained weights read it.

Each optimizer module declares its :class:`~hyperadam_optax.optimizers.spec.OptimizerSpec` as
``SPEC``; adding an optimizer is a new module and its line in :data:`OPTIMIZERS`.
"""

from __future__ import annotations

from hyperadam_optax.optimizers import dm_optimizer, hyperadam, l2o_scale, rnnprop
from hyperadam_optax.optimizers.spec import OptimizerSpec

#: Canonical name -> spec.
OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec for spec in (hyperadam.SPEC, rnnprop.SPEC, dm_optimizer.SPEC, l2o_scale.SPEC)
}

_ALIASES = {alias: spec.name for spec in OPTIMIZERS.values() for alias in spec.aliases}


def names() -> list[str]:
    """Every accepted name: the canonical ones, then the aliases."""
    return [*OPTIMIZERS, *_ALIASES]


def get_optimizer(name: str) -> OptimizerSpec:
    """The spec of ``name`` (canonical or alias); ``ValueError`` lists the names otherwise."""
    spec = OPTIMIZERS.get(_ALIASES.get(name, name))
    if spec is None:
        raise ValueError(f"unknown learned optimizer {name!r}; expected one of {names()}")
    return spec


def spec_for_params(kind: str) -> OptimizerSpec:
    """The spec whose meta-parameter type is named ``kind`` (e.g. ``"HyperAdamParams"``)."""
    for spec in OPTIMIZERS.values():
        if spec.params_type.__name__ == kind:
            return spec
    raise ValueError(f"unknown meta-parameter kind {kind!r}; expected one of "
                     f"{sorted(s.params_type.__name__ for s in OPTIMIZERS.values())}")
