"""Which meta-parameters a run trains: the others keep their initial values.

``MetaTrainConfig.trainable`` names fields of the meta-parameters' pytree (e.g.
``("theta_q", "b_q")``, HyperAdam's WeightCell). The meta-gradient of the other fields is
zeroed before the outer optimizer (so clipping sees only the trained ones), and ES and PES
perturb only the trained fields: their estimates' variance grows with the number of
perturbed coordinates, so training a few hundred of HyperAdam's 5,400 gives a far less noisy
estimate per meta-step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def _field(path) -> str:
    first = path[0]
    return str(getattr(first, "name", getattr(first, "key", getattr(first, "idx", first))))


def field_names(meta_params: PyTree) -> list[str]:
    """The top-level field names of ``meta_params`` (a NamedTuple's fields, a dict's keys)."""
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(meta_params)[0]]
    return list(dict.fromkeys(_field(p) for p in paths))


def trainable_mask(meta_params: PyTree, trainable: tuple[str, ...] | None) -> PyTree:
    """A pytree like ``meta_params`` of Python bools: whether each leaf trains (every leaf if
    ``trainable`` is None). Raises ``ValueError`` naming the fields if one is unknown."""
    if trainable is None:
        return jax.tree.map(lambda _: True, meta_params)
    known = field_names(meta_params)
    unknown = [name for name in trainable if name not in known]
    if unknown:
        raise ValueError(f"trainable fields {unknown} are not fields of these meta-parameters "
                         f"({', '.join(known)})")
    return jax.tree_util.tree_map_with_path(lambda p, _: _field(p) in trainable, meta_params)


def frozen_to_zero(tree: PyTree, mask: PyTree) -> PyTree:
    """``tree`` with the leaves of untrained fields replaced by zeros (same shapes)."""
    return jax.tree.map(lambda x, m: x if m else jnp.zeros_like(x), tree, mask)
