"""Input checks shared by the learned optimizers: clear errors instead of silent misuse."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_float_leaves(tree, what: str) -> None:
    """Raise ``TypeError`` unless every leaf has a real floating dtype."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{what} must be real floating point; leaf {jax.tree_util.keystr(path)} "
                f"has dtype {dtype}"
            )


def check_same_structure(tree, reference, what: str, reference_what: str) -> None:
    """Raise ``ValueError`` if ``tree`` and ``reference`` differ in structure."""
    got, want = jax.tree.structure(tree), jax.tree.structure(reference)
    if got != want:
        raise ValueError(
            f"{what} have a different tree structure than the {reference_what}.\n"
            f"  expected: {want}\n  found:    {got}"
        )
