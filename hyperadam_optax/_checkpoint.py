"""Pickle-free, atomic checkpoints of array pytrees (``.npz`` + the leaves' key paths)."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

_PATHS_KEY = "__paths__"


def atomic_write(path: str, write) -> None:
    """``write(file_object)`` into a temporary file beside ``path``, then rename it over ``path``.

    A crash or kill leaves either the old file or the new one, never a partial file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_pytree(path: str, tree) -> None:
    """Save the array leaves of ``tree`` with their key paths (structure comes from a template)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    arrays = {f"{i:06d}": np.asarray(leaf) for i, (_, leaf) in enumerate(flat)}
    arrays[_PATHS_KEY] = np.array(json.dumps([jax.tree_util.keystr(p) for p, _ in flat]))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_leaves(path: str) -> dict[str, np.ndarray]:
    """The leaves saved by :func:`save_pytree`, keyed by their key paths, in order (no
    template needed: e.g. the meta-parameters out of a whole meta-state)."""
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path} is not a readable checkpoint: {e}") from e
    try:
        paths = json.loads(str(arrays.pop(_PATHS_KEY)))
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a checkpoint written by save_pytree") from e
    if sorted(arrays) != [f"{i:06d}" for i in range(len(paths))]:
        raise ValueError(f"{path} holds {len(arrays)} arrays for {len(paths)} key paths")
    return {p: arrays[f"{i:06d}"] for i, p in enumerate(paths)}


def load_pytree(path: str, template):
    """Load a tree saved by :func:`save_pytree` into the structure of ``template``.

    ``template`` may hold arrays or ``jax.ShapeDtypeStruct``; every leaf's path, shape and
    dtype must match, else ``ValueError`` says which.
    """
    leaves_by_path = read_leaves(path)
    paths, arrays = list(leaves_by_path), list(leaves_by_path.values())
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    want = [jax.tree_util.keystr(p) for p, _ in flat]
    if paths != want:
        raise ValueError(f"{path} holds a different structure: {len(paths)} leaves, expected "
                         f"{len(want)}; first differing path: "
                         f"{next((a, b) for a, b in zip(paths + [None], want + [None]) if a != b)}")
    leaves = []
    for i, (p, ref) in enumerate(flat):
        a = arrays[i]
        if a.shape != tuple(ref.shape) or a.dtype != np.dtype(ref.dtype):
            raise ValueError(f"{path}: leaf {jax.tree_util.keystr(p)} has shape {a.shape} dtype "
                             f"{a.dtype}, expected {tuple(ref.shape)} {np.dtype(ref.dtype)}")
        leaves.append(jnp.asarray(a))
    return jax.tree.unflatten(treedef, leaves)
