"""Setting up a meta-training run from its choices (:mod:`~hyperadam_optax.meta.choices`):
the starting meta-parameters of ``--init-from``, the paper's defaults filled in once, and
the provenance (commit, file hashes) the run records."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from hyperadam_optax.io.files import load_weights_or_checkpoint, make_kwargs_of
from hyperadam_optax.meta.config import MetaTrainConfig
from hyperadam_optax.meta.learned import LearnedOptimizer
from hyperadam_optax.optimizers.registry import get_optimizer


def _git_commit() -> str | None:
    """The commit of the checkout this package runs from (None outside a git checkout)."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def initial_meta_params(path: str, learned: LearnedOptimizer, make_kwargs: dict | None = None):
    """Meta-parameters to start from: a file of ``save_meta_params`` or a meta-training
    checkpoint; they must be the optimizer's kind with shapes it accepts (not necessarily
    its default init's: e.g. HyperAdam reading the sign agreement), and a file's
    ``make_kwargs`` (e.g. HyperAdam's ``normalization``) those of the run."""
    template = jax.eval_shape(learned.init_meta_params, jax.random.PRNGKey(0))
    try:
        theta, metadata = load_weights_or_checkpoint(path, learned.name)
    except ValueError as e:
        raise ValueError(f"--init-from {e}") from None
    if type(theta) is not type(template):
        raise ValueError(f"--init-from {path} holds {type(theta).__name__}, not the "
                         f"{type(template).__name__} of {learned.name}")
    if metadata is not None and make_kwargs_of(metadata) != (make_kwargs or {}):
        raise ValueError(f"--init-from {path}: its weights were made for "
                         f"{make_kwargs_of(metadata) or 'the default arguments'}, this run uses "
                         f"{make_kwargs or 'the default arguments'} (hyperadam_optax."
                         "contrib.global_rms_equivalent converts HyperAdam weights to global_rms)")
    found = {k: tuple(np.shape(v)) for k, v in theta._asdict().items()}
    expected = get_optimizer(learned.name).expected_shapes(found)
    if found != expected:
        raise ValueError(f"--init-from {path}: shapes {found} are not those of a "
                         f"{learned.name} (expected {expected})")
    return jax.tree.map(lambda x, t: x.astype(t.dtype), theta, template)


def _sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def with_recipe_defaults(config: MetaTrainConfig, learned: LearnedOptimizer) -> MetaTrainConfig:
    """``meta_lr=None`` and ``meta_loss=None`` become the optimizer's paper's."""
    if config.meta_lr is None:
        config = dataclasses.replace(config, meta_lr=learned.default_meta_lr)
    if config.meta_loss is None:
        config = dataclasses.replace(config, meta_loss=learned.meta_loss)
    return config
