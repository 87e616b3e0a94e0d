"""A meta-training run's directory: its files, its lock, crash-safe checkpoints and resume.

Layout of ``out_dir`` (:class:`RunFiles`)::

    config.json            the run's identity (resume refuses a different one)
    metrics.jsonl          one line per meta-step (+ validation lines)
    checkpoints/ckpt_<step>.npz   the last ``keep`` full meta-states
    checkpoints/best.npz   the meta-state with the lowest validation loss
    meta_params.npz        final meta-parameters (``load_meta_params``), best_meta_params.npz
    card.json              command, config, steps, wall time, seed, validation
    meta_loss.png          meta-loss and validation curves

Every file is written atomically; a kill leaves the old file or the new one, and
:func:`restore` continues from the newest intact checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import shutil

try:
    import fcntl
except ImportError:  # not on Windows: runs there take no lock
    fcntl = None

from hyperadam_optax.io.files import (
    atomic_write,
    ensure_writable_dir,
    load_pytree,
    read_json,
    read_leaves,
    save_meta_params,
    save_pytree,
)


class RunConfigMismatchError(ValueError):
    """``out_dir`` holds a run with a different configuration."""


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """The paths of a run directory (module docstring)."""

    out_dir: str

    def _path(self, *parts: str) -> str:
        return os.path.join(self.out_dir, *parts)

    checkpoints = property(lambda self: self._path("checkpoints"))
    config = property(lambda self: self._path("config.json"))
    metrics = property(lambda self: self._path("metrics.jsonl"))
    card = property(lambda self: self._path("card.json"))
    meta_params = property(lambda self: self._path("meta_params.npz"))
    best_meta_params = property(lambda self: self._path("best_meta_params.npz"))
    best_checkpoint = property(lambda self: self._path("checkpoints", "best.npz"))
    plot = property(lambda self: self._path("meta_loss.png"))

    def checkpoint(self, step: int) -> str:
        return os.path.join(self.checkpoints, f"ckpt_{step:08d}.npz")

    def checkpoint_steps(self) -> list[int]:
        """The steps of the ``ckpt_*.npz`` files, ascending."""
        steps = []
        for path in glob.glob(os.path.join(self.checkpoints, "ckpt_*.npz")):
            try:
                steps.append(int(os.path.basename(path)[5:-4]))
            except ValueError:
                continue
        return sorted(steps)


def read_metrics(path: str, log=None) -> list[dict]:
    """The rows of a run's ``metrics.jsonl``. A line that is not a JSON object (cut by a
    kill, or corrupted) is skipped, and ``log`` is told which; the rows after it are kept."""
    if not os.path.exists(path):
        return []
    rows, bad = [], []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
            elif line.strip():
                bad.append(number)
    if bad and log is not None:
        log(f"warning: skipped unreadable lines {bad} of {path}")
    return rows


def _write_json(path: str, obj) -> None:
    text = json.dumps(obj, indent=2).encode()
    atomic_write(path, lambda f: f.write(text))


class RunDirLockedError(FileExistsError):
    """Another process is meta-training into the same ``out_dir``."""


@contextlib.contextmanager
def locked_run_dir(out_dir: str):
    """Hold an exclusive lock on ``out_dir`` (``out_dir/.lock``) for a run's whole life.

    A second run into the same directory is refused at once, naming the holder's pid. The
    lock is the operating system's (``fcntl.flock``), so a killed process never leaves a
    stale lock behind. (Without ``fcntl``, e.g. on Windows, no lock is taken.)
    """
    ensure_writable_dir(out_dir)
    fd = os.open(os.path.join(out_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise RunDirLockedError(
                    f"{out_dir} is in use by another meta-train process (pid {holder}); wait "
                    "for it to finish or choose another --out-dir (nothing was changed)"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def claim_run_dir(files: RunFiles, identity: dict, resume: bool) -> None:
    """Write ``config.json``; refuse a used directory without ``resume``, or a different
    configuration with it (nothing is changed then). A directory whose run never wrote a
    checkpoint (it failed while starting) is not in use: it is claimed afresh."""
    existing = read_json(files.config, "run file") if os.path.exists(files.config) else None
    if existing is not None and not files.checkpoint_steps():
        existing = None  # a run that failed before its first checkpoint holds nothing to keep
    if existing is not None:
        if not resume:
            raise FileExistsError(f"{files.out_dir} already holds a meta-training run; pass "
                                  "--resume to continue it or choose another --out-dir (nothing "
                                  "was changed)")
        diff = {k: (existing.get(k), identity.get(k)) for k in set(existing) | set(identity)
                if existing.get(k) != identity.get(k)}
        if diff:
            detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}"
                               for k, (a, b) in sorted(diff.items()))
            raise RunConfigMismatchError(f"{files.out_dir} holds a run with a different "
                                         f"configuration ({detail}); nothing was changed")
    os.makedirs(files.checkpoints, exist_ok=True)
    _write_json(files.config, identity)


def remove_partial_files(files: RunFiles) -> list[str]:
    """Delete the temporary files a kill left mid-write (``.tmp-*``; every finished file was
    renamed into place). Only safe while holding the run directory's lock."""
    removed = []
    for directory in (files.out_dir, files.checkpoints):
        for path in glob.glob(os.path.join(directory, ".tmp-*")):
            os.unlink(path)
            removed.append(path)
    return removed


@dataclasses.dataclass
class RunProgress:
    """Where a run stands: the meta-state, its step, the metric rows and the best checkpoint."""

    state: object
    start: int = 0
    restored: bool = False
    history: list = dataclasses.field(default_factory=list)
    best: dict = dataclasses.field(
        default_factory=lambda: {"validation_loss": float("inf"), "step": None})


def _load_latest_checkpoint(files: RunFiles, template, log) -> tuple[int, object] | None:
    """The newest intact checkpoint ``(step, state)``; a corrupt one is skipped with a
    warning (the one before it is used)."""
    for step in reversed(files.checkpoint_steps()):
        try:
            return step, load_pytree(files.checkpoint(step), template)
        except ValueError as e:
            log(f"warning: skipping unreadable checkpoint {files.checkpoint(step)} ({e}); "
                "falling back to the one before it")
    return None


def _repair_best(files: RunFiles, progress: RunProgress, identity: dict, log) -> None:
    """Make ``best.npz`` and ``best_meta_params.npz`` the checkpoint of the best validation
    row on disk (a kill between writing ``ckpt_N`` and copying it to ``best.npz`` leaves an
    older best behind)."""
    step = progress.best["step"]
    if step is None or not os.path.exists(files.checkpoint(step)):
        return
    try:
        best_step = int(read_leaves(files.best_checkpoint)[".step"])
    except (ValueError, KeyError):
        best_step = None
    if best_step != step:
        log(f"repairing {files.best_checkpoint}: it held meta-step {best_step}, the best "
            f"validation is at meta-step {step}")
        state = load_pytree(files.checkpoint(step), progress.state)
        _write_best(files, files.checkpoint(step), state, step,
                    progress.best["validation_loss"], identity)


def restore(files: RunFiles, state, resume: bool, identity: dict, log) -> RunProgress:
    """The progress to continue from: the latest intact checkpoint (its state as host
    arrays, to be sharded by the caller) with its metric rows and best validation
    (``resume``; best files repaired if a kill left them stale), else ``state`` at step 0.
    Rewrites ``metrics.jsonl`` to the kept rows."""
    progress = RunProgress(state)
    latest = _load_latest_checkpoint(files, state, log) if resume else None
    if latest is not None:
        progress.start, loaded = latest
        progress.state, progress.restored = loaded, True
        progress.history = [r for r in read_metrics(files.metrics, log)
                            if r["step"] <= progress.start]
        vals = [r for r in progress.history if "validation_loss" in r]
        if vals:
            b = min(vals, key=lambda r: r["validation_loss"])
            progress.best = {"validation_loss": b["validation_loss"], "step": b["step"]}
        _repair_best(files, progress, identity, log)
        log(f"resuming {files.out_dir} from meta-step {progress.start}")
    lines = "".join(json.dumps(r) + "\n" for r in progress.history).encode()
    atomic_write(files.metrics, lambda f: f.write(lines))
    return progress


def _write_best(files: RunFiles, checkpoint: str, state, step: int, validation_loss: float,
                identity: dict) -> None:
    with open(checkpoint, "rb") as src:
        atomic_write(files.best_checkpoint, lambda f: shutil.copyfileobj(src, f))
    save_meta_params(files.best_meta_params, state.meta_params,
                     {"step": step, "validation_loss": validation_loss, **identity})


def save_checkpoint(files: RunFiles, progress: RunProgress, step: int, validation_loss: float,
                    identity: dict, keep: int, state=None) -> None:
    """``ckpt_<step>.npz`` of ``state`` (default ``progress.state``; host arrays when it is
    sharded over other processes); ``best.npz`` and ``best_meta_params.npz`` if the
    validation loss is the lowest so far; only the last ``keep`` checkpoints stay."""
    path = files.checkpoint(step)
    state = progress.state if state is None else state
    save_pytree(path, state)
    if validation_loss < progress.best["validation_loss"]:
        progress.best.update(validation_loss=validation_loss, step=step)
        _write_best(files, path, state, step, validation_loss, identity)
    for old in files.checkpoint_steps()[:-keep]:
        os.unlink(files.checkpoint(old))

