"""The file format of the package: pickle-free ``.npz``, written atomically.

One writer (:func:`write_npz`) and one reader (:func:`read_npz`) serve both kinds of file:

- meta-parameter files (:func:`save_meta_params`, :func:`load_meta_params`): the fields of a
  registered meta-parameter NamedTuple, its type name under ``__kind__`` and a JSON
  ``__metadata__`` dict (e.g. a card);
- checkpoints of array pytrees (:func:`save_pytree`, :func:`load_pytree`,
  :func:`read_leaves`): the leaves in order, their key paths as JSON under ``__paths__``.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hyperadam_optax.optimizers.registry import OPTIMIZERS, get_optimizer, spec_for_params

_PATHS_KEY = "__paths__"
_KIND_KEY = "__kind__"
_METADATA_KEY = "__metadata__"


def atomic_write(path: str | os.PathLike, write) -> None:
    """``write(file_object)`` into a temporary file beside ``path``, then rename it over ``path``.

    A crash or kill leaves either the old file or the new one, never a partial file.
    """
    path = os.fspath(path)
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


def ensure_writable_dir(path: str | os.PathLike, what: str = "--out-dir") -> None:
    """Create ``path`` if needed and check a file can be written in it, before any work whose
    results would go there; ``ValueError`` naming ``what`` otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"{what} {os.fspath(path)!r} is not a writable directory: {e}") from None


def read_json(path: str | os.PathLike, what: str):
    """The JSON in ``path``; ``ValueError("{what} {path} is not readable JSON ...")`` for a
    missing, truncated or corrupt file."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{what} {os.fspath(path)} is not readable JSON ({e})") from None


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """The one writer: ``arrays`` to an uncompressed ``.npz`` at ``path``, atomically."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_npz(path: str | os.PathLike, what: str) -> dict[str, np.ndarray]:
    """The one reader: every array of the ``.npz`` at ``path`` (never unpickles).

    ``ValueError("{path} is not a readable {what} ...")`` for a missing or corrupt file.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
            if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
                found = "a .npy array" if magic == b"\x93NUM" else "not a zip archive"
                raise ValueError(f"expected an .npz (zip) archive, found {found}")
            f.seek(0)
            with np.load(f, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path} is not a readable {what}: {e}") from e


# Meta-parameter files -------------------------------------------------------------------------

def save_meta_params(path: str | os.PathLike, meta_params: NamedTuple,
                     metadata: dict[str, Any] | None = None) -> None:
    """Write ``meta_params`` (and a JSON-serialisable ``metadata`` dict) to ``path`` (.npz).

    The file is written to a temporary name and renamed, so a crash never leaves a
    half-written file under ``path``. What :func:`load_meta_params` would refuse (shapes of
    another optimizer, non-float or non-finite values) is refused here, before writing, as
    is a ``path`` that is a directory or lies in a missing one (``ValueError`` naming it).
    """
    kind = type(meta_params).__name__
    known = {s.params_type.__name__: s for s in OPTIMIZERS.values()}
    if kind not in known:
        raise TypeError(f"cannot save {kind}; expected one of {sorted(known)}")
    arrays = {name: np.asarray(v) for name, v in meta_params._asdict().items()}
    found = {k: tuple(v.shape) for k, v in arrays.items()}
    expected = known[kind].expected_shapes(found)
    if found != expected:
        raise ValueError(f"cannot save to {os.fspath(path)}: fields of {kind} do not match.\n"
                         f"  expected shapes: {expected}\n  found shapes:    {found}")
    bad = sorted(k for k, v in arrays.items()
                 if not np.issubdtype(v.dtype, np.floating) or not np.all(np.isfinite(v)))
    if bad:
        raise ValueError(f"cannot save to {os.fspath(path)}: fields {bad} of {kind} are not "
                         "finite floating-point values (load_meta_params would refuse them)")
    try:
        text = json.dumps(metadata or {})
    except (TypeError, ValueError) as e:
        raise ValueError(f"cannot save to {os.fspath(path)}: metadata is not JSON: {e}") from None
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(directory):
        raise ValueError(f"cannot save to {os.fspath(path)}: "
                         + ("it is a directory" if os.path.isdir(path) else
                            f"no directory {directory}"))
    arrays[_KIND_KEY] = np.array(kind)
    arrays[_METADATA_KEY] = np.array(text)
    write_npz(path, arrays)


def load_meta_params(path: str | os.PathLike, *, with_metadata: bool = False):
    """Read meta-parameters written by :func:`save_meta_params` (never unpickles).

    Returns the NamedTuple (e.g. ``HyperAdamParams``), or ``(meta_params, metadata)``
    with ``with_metadata=True``. A missing, corrupt or mis-shaped file raises
    ``ValueError`` naming the expected and found shapes. Weights made for non-default
    arguments of their optimizer's alias (``metadata["make_kwargs"]``, e.g. HyperAdam's
    ``normalization``) warn when loaded without their metadata: they need those arguments.
    """
    arrays = read_npz(path, "meta-parameter .npz file")
    kind = str(arrays.pop(_KIND_KEY, ""))
    try:
        spec = spec_for_params(kind)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    try:
        metadata = json.loads(str(arrays.pop(_METADATA_KEY, "{}")))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: metadata is not valid JSON: {e}") from e
    found = {k: tuple(v.shape) for k, v in arrays.items()}
    expected = spec.expected_shapes(found)
    if found != expected or not all(np.issubdtype(v.dtype, np.floating) for v in arrays.values()):
        raise ValueError(
            f"{path}: fields of {kind} do not match.\n  expected shapes: {expected}\n"
            f"  found shapes:    {found}\n  found dtypes:    "
            f"{ {k: str(v.dtype) for k, v in arrays.items()} }"
        )
    bad = sorted(k for k, v in arrays.items() if not np.all(np.isfinite(v)))
    if bad:
        raise ValueError(f"{path}: fields {bad} of {kind} hold NaN or infinite values")
    cls = spec.params_type
    meta_params = cls(**{k: jnp.asarray(arrays[k]) for k in cls._fields})
    if with_metadata:
        return meta_params, metadata
    made_for = make_kwargs_of(metadata)
    if made_for:
        arguments = ", ".join(f"{k}={v!r}" for k, v in made_for.items())
        warnings.warn(f"{path}: these {spec.name} weights were made for "
                      f"{spec.name}(..., {arguments}); pass those arguments "
                      "(load_meta_params(path, with_metadata=True) returns them under "
                      "metadata['make_kwargs'])", stacklevel=2)
    return meta_params


def make_kwargs_of(metadata: dict) -> dict[str, Any]:
    """The alias arguments a meta-parameter file's weights were made for (``{}``: defaults)."""
    kwargs = metadata.get("make_kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"metadata['make_kwargs'] must be a dict, got {kwargs!r}")
    return kwargs


# Checkpoints of array pytrees -----------------------------------------------------------------

def save_pytree(path: str | os.PathLike, tree) -> None:
    """Save the array leaves of ``tree`` with their key paths (structure comes from a template)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    arrays = {f"{i:06d}": np.asarray(leaf) for i, (_, leaf) in enumerate(flat)}
    arrays[_PATHS_KEY] = np.array(json.dumps([jax.tree_util.keystr(p) for p, _ in flat]))
    write_npz(path, arrays)


def read_leaves(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The leaves saved by :func:`save_pytree`, keyed by their key paths, in order (no
    template needed: e.g. the meta-parameters out of a whole meta-state)."""
    arrays = read_npz(path, "checkpoint")
    try:
        paths = json.loads(str(arrays.pop(_PATHS_KEY)))
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a checkpoint written by save_pytree") from e
    if sorted(arrays) != [f"{i:06d}" for i in range(len(paths))]:
        raise ValueError(f"{path} holds {len(arrays)} arrays for {len(paths)} key paths")
    return {p: arrays[f"{i:06d}"] for i, p in enumerate(paths)}


def load_pytree(path: str | os.PathLike, template):
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


def meta_params_from_checkpoint(path: str | os.PathLike, optimizer: str = "hyperadam"):
    """The meta-parameters inside a meta-training checkpoint (``checkpoints/ckpt_*.npz``, the
    whole meta-state), as the optimizer's meta-parameter tuple (e.g. ``HyperAdamParams``)."""
    cls = get_optimizer(optimizer).params_type
    try:
        leaves = read_leaves(path)
    except ValueError as e:
        raise ValueError(f"{path} is not a readable meta-training checkpoint: {e}") from e
    prefix = ".meta_params."  # MetaState.meta_params
    fields = {p[len(prefix):]: a for p, a in leaves.items() if p.startswith(prefix)}
    if set(fields) != set(cls._fields):
        raise ValueError(f"{path} holds no {optimizer} meta-parameters (fields {sorted(fields)})")
    return cls(**{k: jnp.asarray(fields[k]) for k in cls._fields})


def load_weights_or_checkpoint(path: str | os.PathLike, optimizer: str = "hyperadam"):
    """``(meta_params, metadata)`` of a ``save_meta_params`` file, or of a meta-training
    checkpoint (``RUN/checkpoints/*.npz``; its metadata is the run's ``RUN/config.json``, or
    None if the checkpoint was moved out of its run directory); ``ValueError`` naming both
    tries if it is neither."""
    try:
        return load_meta_params(path, with_metadata=True)
    except ValueError as file_error:
        try:
            theta = meta_params_from_checkpoint(path, optimizer)
        except ValueError:
            raise ValueError(f"{path}: neither a meta-parameter file nor a checkpoint of "
                             f"{optimizer} ({file_error})") from None
    run_config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))),
                              "config.json")
    return theta, read_json(run_config, "run file") if os.path.exists(run_config) else None
