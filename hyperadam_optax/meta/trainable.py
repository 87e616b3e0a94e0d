"""Which meta-parameters a run trains: the others keep their initial values.

``MetaTrainConfig.trainable`` names fields of the meta-parameters' pytree, whole
(``"theta_q"``) or a block of them (``"theta_q[1:]"``: rows 1 onwards; ``"theta_h[:, 1:20]"``:
columns 1-19; Python's slice syntax without a step, one slice per leading axis), e.g.
``("theta_q[1:]",)`` for HyperAdam's WeightCell reading every StateCell unit but the clock.
Entries naming the same field add up. The meta-gradient of everything else is zeroed
before the outer optimizer (so clipping sees only what trains), and ES and PES perturb only
what trains: their estimates' variance grows with the number of perturbed coordinates, so
training a few hundred of HyperAdam's 5,400 gives a far less noisy estimate per meta-step.

``MetaTrainConfig.field_scales`` names fields or blocks the same way, each with a factor
(``"theta_p=0.02"``): :func:`field_scales_tree`.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

_ENTRY = re.compile(r"^(?P<field>\w+)(\[(?P<block>[^\]]*)\])?$")
_SLICE = re.compile(r"^\s*(-?\d*)\s*:\s*(-?\d*)\s*$")


def _field(path) -> str:
    first = path[0]
    return str(getattr(first, "name", getattr(first, "key", getattr(first, "idx", first))))


def field_names(meta_params: PyTree) -> list[str]:
    """The top-level field names of ``meta_params`` (a NamedTuple's fields, a dict's keys)."""
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(meta_params)[0]]
    return list(dict.fromkeys(_field(p) for p in paths))


def parse_entry(entry: str) -> tuple[str, tuple[slice, ...] | None]:
    """``"FIELD"`` -> ``(FIELD, None)``; ``"FIELD[a:b, c:d]"`` -> ``(FIELD, (slice(a, b),
    slice(c, d)))``."""
    match = _ENTRY.match(entry.strip()) if isinstance(entry, str) else None
    block = None if match is None else match["block"]
    slices = [] if block is None else [_SLICE.match(part) for part in block.split(",")]
    if match is None or not all(slices):
        raise ValueError(f"trainable entry {entry!r} is not FIELD or FIELD[START:STOP, ...] "
                         f"(a slice per leading axis, e.g. theta_q[1:] or theta_h[:, 1:20])")
    if block is None:
        return match["field"], None
    return match["field"], tuple(slice(*(int(b) if b else None for b in m.groups()))
                                 for m in slices)


def trainable_mask(meta_params: PyTree, trainable: tuple[str, ...] | None, *,
                   option: str = "trainable") -> PyTree:
    """A pytree like ``meta_params`` whose leaves say what trains: ``True`` (the whole leaf),
    ``False`` (none of it) or a boolean array of the leaf's shape (a block). Every leaf
    trains if ``trainable`` is None. Raises ``ValueError`` naming an unknown field, or a block
    that selects nothing (``option``: the setting the messages name)."""
    if trainable is None:
        return jax.tree.map(lambda _: True, meta_params)
    known = field_names(meta_params)
    entries = [(*parse_entry(e), e) for e in trainable]
    unknown = [name for name, _, _ in entries if name not in known]
    if unknown:
        raise ValueError(f"{option} fields {unknown} are not fields of these meta-parameters "
                         f"({', '.join(known)})")

    def leaf_mask(path, leaf):
        blocks = [(b, e) for name, b, e in entries if name == _field(path)]
        if not blocks:
            return False
        if any(b is None for b, _ in blocks):
            return True
        shape = np.shape(leaf)
        mask = np.zeros(shape, bool)
        for block, entry in blocks:
            if len(block) > len(shape):
                raise ValueError(f"{option} entry {entry!r} has {len(block)} slices for the "
                                 f"{len(shape)} axes of {_field(path)!r} (shape {shape})")
            if not all(range(n)[s] for n, s in zip(shape, block)):
                raise ValueError(f"{option} entry {entry!r} selects nothing of "
                                 f"{_field(path)!r} (shape {shape})")
            mask[block] = True
        return mask

    return jax.tree_util.tree_map_with_path(leaf_mask, meta_params)


def frozen_to_zero(tree: PyTree, mask: PyTree) -> PyTree:
    """``tree`` with what does not train replaced by zeros (same shapes)."""
    def keep(x, m):
        if m is True:
            return x
        if m is False:
            return jnp.zeros_like(x)
        return jnp.where(m, x, jnp.zeros_like(x))
    return jax.tree.map(keep, tree, mask)


def parse_scale(entry: str) -> tuple[str, float]:
    """``"FIELD=FACTOR"`` or ``"FIELD[START:STOP, ...]=FACTOR"`` -> ``(FIELD[...], FACTOR)``,
    with FACTOR positive and finite."""
    name, _, factor = entry.rpartition("=") if isinstance(entry, str) else ("", "", "")
    try:
        value = float(factor)
    except ValueError:
        value = float("nan")
    if not name or not 0 < value < float("inf"):
        raise ValueError(f"field scale {entry!r} is not FIELD=FACTOR or FIELD[START:STOP]=FACTOR "
                         f"with a positive, finite FACTOR (e.g. theta_p=0.02)")
    parse_entry(name)
    return name, value


def field_scales_tree(meta_params: PyTree, field_scales: tuple[str, ...] | None) -> PyTree:
    """A pytree like ``meta_params`` of the factors ``field_scales`` give (1 elsewhere; a
    float per leaf, or an array where a block is scaled; entries on the same entries
    multiply). Meta-training multiplies ES/PES perturbations and the outer optimizer's update
    of those entries by their factor: the run trains ``φ`` in ``θ = θ_0 + factor · φ`` with
    its ``sigma`` and meta-rate, for fields whose effect on the optimizer is far larger or
    smaller than the others' (e.g. HyperAdam's input kernels under ``global_rms``, whose
    inputs are √N times the ``global_l2`` ones). Estimators return the gradient in ``θ``
    (ES and PES divide their estimate by ``factor²``, having perturbed by ``factor · σ``);
    the meta-step turns it into ``φ``'s, ``factor · ∇θ``, and the update back, ``factor · Δφ``."""
    scales = jax.tree.map(lambda _: 1.0, meta_params)
    for entry in field_scales or ():
        block, factor = parse_scale(entry)
        mask = trainable_mask(meta_params, (block,), option="field_scales")

        def scaled(current, m, leaf, factor=factor):
            if m is True:
                return current * factor
            if m is False:
                return current
            return np.where(m, np.broadcast_to(current, np.shape(leaf)) * factor, current)

        scales = jax.tree.map(scaled, scales, mask, meta_params)
    return scales


def scale_fields(tree: PyTree, scales: PyTree, power: int = 1) -> PyTree:
    """``tree`` (like the meta-parameters, optionally with a leading axis) times ``scales **
    power`` (:func:`field_scales_tree`), leaf by leaf."""
    def scale(x, f):
        if isinstance(f, float) and f == 1.0:
            return x
        f = np.power(f, power)
        return x * jnp.asarray(np.reshape(f, (1,) * (x.ndim - np.ndim(f)) + np.shape(f)),
                               x.dtype)

    return jax.tree.map(scale, tree, scales)
