"""State bookkeeping and input checks shared by the coordinatewise learned optimizers."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def state_dtype_for(p, state_dtype: Any = None):
    """The state's dtype for param ``p``: ``state_dtype``, else ``p``'s promoted to >= float32."""
    if state_dtype is not None:
        dtype = jnp.dtype(state_dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"state_dtype must be a real floating dtype (e.g. jnp.bfloat16, "
                            f"jnp.float32), got {dtype}")
        return dtype
    return jnp.promote_types(p.dtype, jnp.float32)


def zeros_state(p, trailing: int | None, dtype):
    """Zeros of shape ``p.shape`` (``trailing=None``) or ``p.shape + (trailing,)``.

    Built by broadcasting so the state keeps the param's sharding; a fresh buffer per call,
    so a state can be donated to ``jit``.
    """
    z = jnp.zeros_like(p, dtype=dtype)
    if trailing is None:
        return z
    return jnp.broadcast_to(z[..., None], p.shape + (trailing,))


def compute_dtype(state_leaf_dtypes, meta_params):
    """At least float32, and at least the state's and the meta-parameters' precision."""
    return jnp.result_type(*(jnp.promote_types(dt, jnp.float32) for dt in state_leaf_dtypes),
                           *jax.tree.leaves(meta_params))


def check_meta_params(meta_params, cls: type, size_field: str | tuple[str, ...],
                      expected_shapes):
    """Validate a meta-parameter NamedTuple; returns its size (J or the hidden size).

    The size is ``getattr(meta_params, size_field).shape[0]`` (a tuple of them when
    ``size_field`` names several fields); ``expected_shapes(*sizes)`` gives every field's
    shape. Raises ``TypeError``/``ValueError`` naming expected and found shapes.
    """
    name = cls.__name__
    if not isinstance(meta_params, cls):
        raise TypeError(f"expected {name}, got {type(meta_params).__name__}")
    fields = (size_field,) if isinstance(size_field, str) else size_field
    sizes = []
    for field in fields:
        size_shape = tuple(jnp.shape(getattr(meta_params, field)))
        if len(size_shape) < 1 or size_shape[0] < 1:
            raise ValueError(f"{name}.{field} must have a leading dimension n >= 1, "
                             f"found shape {size_shape}")
        sizes.append(size_shape[0])
    found = {k: tuple(jnp.shape(v)) for k, v in meta_params._asdict().items()}
    expected = expected_shapes(*sizes)
    wrong = {k: (expected[k], found[k]) for k in expected if expected[k] != found[k]}
    if wrong:
        detail = "; ".join(f"{k}: expected {e}, found {f}" for k, (e, f) in wrong.items())
        raise ValueError(f"{name} fields disagree about the sizes {tuple(sizes)} (from "
                         f"{', '.join(fields)}): {detail}")
    for k, v in meta_params._asdict().items():
        if not jnp.issubdtype(jnp.result_type(v), jnp.floating):
            raise ValueError(f"{name}.{k} must be real floating point, found {jnp.result_type(v)}")
    return sizes[0] if isinstance(size_field, str) else tuple(sizes)


def map_leaves(fn, num_outputs: int, tree, *rest) -> list:
    """``fn(leaf, *rest_leaves) -> tuple of num_outputs arrays``, as ``num_outputs`` trees.

    The ``rest`` trees must have ``tree``'s structure (their leaves may be subtrees' leaves
    of the same structure, e.g. state fields built from the params).
    """
    leaves, treedef = jax.tree.flatten(tree)
    others = [treedef.flatten_up_to(r) for r in rest]
    results = [fn(*args) for args in zip(leaves, *others)]
    columns = list(zip(*results)) if results else [()] * num_outputs
    return [jax.tree.unflatten(treedef, list(c)) for c in columns]

def check_float_leaves(tree, what: str) -> None:
    """Raise ``TypeError`` unless every leaf has a real floating dtype."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{what} must be real floating point; leaf {jax.tree_util.keystr(path)} "
                f"has dtype {dtype}"
            )


def check_same_structure(tree, reference, what: str, reference_what: str,
                         trailing: int = 0) -> None:
    """Raise ``ValueError`` if ``tree`` and ``reference`` differ in structure, or a leaf of
    ``tree`` differs in shape from its reference leaf without the reference's ``trailing``
    axes (e.g. a state of ``param.shape + (J,)``); checked at trace time, free at run time."""
    got, want = jax.tree.structure(tree), jax.tree.structure(reference)
    if got != want:
        raise ValueError(
            f"{what} have a different tree structure than the {reference_what}.\n"
            f"  expected: {want}\n  found:    {got}"
        )
    for (path, leaf), ref in zip(jax.tree_util.tree_leaves_with_path(tree),
                                 jax.tree.leaves(reference)):
        expected = tuple(jnp.shape(ref))[:jnp.ndim(ref) - trailing]
        if tuple(jnp.shape(leaf)) != expected:
            raise ValueError(f"{what}: leaf {jax.tree_util.keystr(path)} has shape "
                             f"{tuple(jnp.shape(leaf))}, but the {reference_what} is for shape "
                             f"{expected}")


def check_number(value, name: str, low: float, high: float, *, open_low: bool = True,
                 open_high: bool = False) -> None:
    """Raise ``ValueError`` unless a concrete number ``value`` lies in the interval
    ``(low, high]`` (ends as ``open_low``/``open_high`` say); traced values (e.g. from
    ``optax.inject_hyperparams``) are not checked."""
    if not isinstance(value, (int, float)):
        return
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    if not (above and below):
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
