"""Pickle-free save/load of meta-parameter NamedTuples as ``.npz`` files."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from hyperadam_optax._checkpoint import atomic_write
from hyperadam_optax._dm_optimizer import DMParams, dm_shapes
from hyperadam_optax._meta_params import HyperAdamParams, expected_shapes
from hyperadam_optax._rnnprop import RNNpropParams, rnnprop_shapes

_KIND_KEY = "__kind__"
_METADATA_KEY = "__metadata__"

# NamedTuple class name -> (class, found field shapes -> expected field shapes).
_REGISTRY: dict[str, tuple[type, Callable[[dict], dict]]] = {}


def register_meta_params(cls: type, size_field: str, shapes: Callable[[int], dict]) -> None:
    """Make ``cls`` saveable; its size is ``shape[0]`` of ``size_field``, ``shapes(size)``
    gives every field's expected shape."""

    def expected(found: dict) -> dict:
        dims = found.get(size_field, ())
        return shapes(dims[0] if len(dims) >= 1 and dims[0] > 0 else 0)

    _REGISTRY[cls.__name__] = (cls, expected)


register_meta_params(HyperAdamParams, "b_u", expected_shapes)
register_meta_params(RNNpropParams, "b_in", rnnprop_shapes)
register_meta_params(DMParams, "theta_out", dm_shapes)


def save_meta_params(path: str | os.PathLike, meta_params: NamedTuple,
                     metadata: dict[str, Any] | None = None) -> None:
    """Write ``meta_params`` (and a JSON-serialisable ``metadata`` dict) to ``path`` (.npz).

    The file is written to a temporary name and renamed, so a crash never leaves a
    half-written file under ``path``.
    """
    kind = type(meta_params).__name__
    if kind not in _REGISTRY:
        raise TypeError(f"cannot save {kind}; expected one of {sorted(_REGISTRY)}")
    arrays = {name: np.asarray(v) for name, v in meta_params._asdict().items()}
    arrays[_KIND_KEY] = np.array(kind)
    arrays[_METADATA_KEY] = np.array(json.dumps(metadata or {}))
    atomic_write(os.fspath(path), lambda f: np.savez(f, **arrays))


def load_meta_params(path: str | os.PathLike, *, with_metadata: bool = False):
    """Read meta-parameters written by :func:`save_meta_params` (never unpickles).

    Returns the NamedTuple (e.g. :class:`HyperAdamParams`), or ``(meta_params, metadata)``
    with ``with_metadata=True``. A missing, corrupt or mis-shaped file raises
    ``ValueError`` naming the expected and found shapes.
    """
    try:
        # The file is opened here so that it is closed even when np.load fails.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path} is not a readable meta-parameter .npz file: {e}") from e
    kind = str(arrays.pop(_KIND_KEY, ""))
    if kind not in _REGISTRY:
        raise ValueError(
            f"{path}: unknown meta-parameter kind {kind!r}; expected one of {sorted(_REGISTRY)}"
        )
    try:
        metadata = json.loads(str(arrays.pop(_METADATA_KEY, "{}")))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: metadata is not valid JSON: {e}") from e
    cls, shapes_from_found = _REGISTRY[kind]
    found = {k: tuple(v.shape) for k, v in arrays.items()}
    expected = shapes_from_found(found)
    if found != expected or not all(np.issubdtype(v.dtype, np.floating) for v in arrays.values()):
        raise ValueError(
            f"{path}: fields of {kind} do not match.\n  expected shapes: {expected}\n"
            f"  found shapes:    {found}\n  found dtypes:    "
            f"{ {k: str(v.dtype) for k, v in arrays.items()} }"
        )
    import jax.numpy as jnp

    meta_params = cls(**{k: jnp.asarray(arrays[k]) for k in cls._fields})
    return (meta_params, metadata) if with_metadata else meta_params
