"""How a learned optimizer declares itself once (:class:`OptimizerSpec`), for the registry."""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import optax


def parse_positive_float(text: str) -> float:
    """``"0.5"`` -> 0.5; anything not positive and finite is refused (``ValueError``)."""
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"expected a positive finite number, got {text}")
    return value


def parse_number_pair(text: str) -> tuple[float, float]:
    """``"A,B"`` -> ``(A, B)``, two numbers (their range is the initialiser's to check)."""
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"expected two numbers A,B, got {text!r}") from None
    return a, b


def parse_bool(text: str) -> bool:
    """``"true"`` or ``"false"`` (any case) -> the bool."""
    value = {"true": True, "false": False}.get(text.strip().lower())
    if value is None:
        raise ValueError(f"expected true or false, got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class OptimizerOption:
    """One argument of an optimizer's initialiser or alias that ``meta-train`` exposes as a
    flag; the CLI builds the flag from this and never names the optimizer.

    Attributes:
      argument: the keyword argument (e.g. ``"warm_start_step"``).
      of: ``"init"`` (of ``init_meta_params``) or ``"alias"`` (of ``make``).
      help: the flag's help.
      parse: ``str -> value`` (raises ``ValueError`` on bad text).
      choices: the values accepted, if a fixed set.
      metavar: the flag's placeholder in ``--help``.
    """

    argument: str
    of: str
    help: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.argument.replace("_", "-")


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
      inits: the values of ``init_meta_params``'s ``init`` (``"paper"``: its authors').
      options: the arguments ``meta-train`` exposes as flags (:class:`OptimizerOption`).
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
    inits: tuple[str, ...] = ("paper",)
    options: tuple[OptimizerOption, ...] = ()

    def __post_init__(self):
        takes = {"init": _keywords(self.init_meta_params), "alias": _keywords(self.make)}
        for option in self.options:
            if option.of not in takes or option.argument not in takes[option.of]:
                raise ValueError(f"{self.name}: option {option.argument!r} is not an argument "
                                 f"of its {option.of!r} function")

    def init_arguments(self) -> set[str]:
        """The options ``init_meta_params`` takes besides the key and ``init``."""
        return _keywords(self.init_meta_params) - {"init"}

    def alias_arguments(self) -> dict[str, Any]:
        """The options of ``make`` besides the rate and meta-parameters, with defaults."""
        parameters = list(inspect.signature(self.make).parameters.values())[2:]
        return {p.name: p.default for p in parameters}

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


def _keywords(fn: Callable) -> set[str]:
    """The parameters of ``fn`` after the first (the key, or the alias's learning rate; the
    alias's meta-parameters are dropped by :meth:`OptimizerSpec.alias_arguments`)."""
    return set(list(inspect.signature(fn).parameters)[1:])
