"""How a learned optimizer declares itself once (:class:`OptimizerSpec`), for the registry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import optax


@dataclasses.dataclass(frozen=True)
class TrainingRecipe:
    """Its paper's meta-training settings (the defaults of ``hyperadam-optax meta-train``).

    Attributes:
      task: the training problem, a name of ``hyperadam_optax.tasks.TASKS``.
      meta_loss: one of ``hyperadam_optax.meta.META_LOSSES``.
      meta_lr: the outer Adam's learning rate.
    """

    task: str
    meta_loss: str
    meta_lr: float


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """Everything the library needs to know about one learned optimizer.

    Attributes:
      name: canonical name (CLI, evaluation, shipped weights ``pretrained/{name}.npz``).
      params_type: the meta-parameter NamedTuple (saved and loaded by this name).
      size_field: the field whose ``shape[0]`` is the size (J or the hidden width), or a
        tuple of fields, one per size (e.g. L2O-Scale's timescales and three RNN widths).
      shapes: ``(*sizes) -> {field: shape}``.
      init_meta_params: ``(key, **kwargs) -> params_type``.
      make: the alias ``(learning_rate, meta_params, **kwargs) -> optax transform``.
      default_learning_rate: ``make``'s default rate (its paper's step).
      recipe: its paper's meta-training settings.
      aliases: other names accepted for it (e.g. ``"dm"``).
    """

    name: str
    params_type: type
    size_field: str | tuple[str, ...]
    shapes: Callable[..., dict[str, tuple[int, ...]]]
    init_meta_params: Callable[..., NamedTuple]
    make: Callable[..., optax.GradientTransformation]
    default_learning_rate: float
    recipe: TrainingRecipe
    aliases: tuple[str, ...] = ()

    def expected_shapes(self, found: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """Every field's expected shape, for the sizes read off ``found[size_field]``."""
        fields = (self.size_field,) if isinstance(self.size_field, str) else self.size_field
        dims = [found.get(field, ()) for field in fields]
        return self.shapes(*(d[0] if len(d) >= 1 and d[0] > 0 else 0 for d in dims))


def require_meta_params(meta_params: Any, alias: str) -> None:
    """The optimizer modules do no file IO: their aliases need explicit meta-parameters
    (``hyperadam_optax.{alias}`` loads the shipped ones when none are given)."""
    if meta_params is None:
        raise ValueError(f"meta_params is required here; hyperadam_optax.{alias}() with no "
                         "meta_params loads the pretrained weights shipped in the package")
