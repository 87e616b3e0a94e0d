"""Meta-training on a task ensemble: one family per meta-step, drawn reproducibly; families
with different shapes; resume is exact; the ensemble is part of the run's identity."""

import json

import jax
import numpy as np
import pytest

import hyperadam_optax as ha
from hyperadam_optax.cli.main import enable_compilation_cache
from hyperadam_optax.meta import MetaTrainConfig, RunOptions, TaskChoice, meta_train

ENSEMBLE = "quadratic,l2o-bowls"  # 10-dim and 2-dim parameters: two compiled meta-steps


@pytest.fixture(autouse=True)
def _restore_compilation_cache():
    """The CLI turns the persistent cache on for its process: off again afterwards."""
    before = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", before)


CONFIG = MetaTrainConfig(num_tasks=2, unroll=5, trajectory=10, meta_lr=0.01,
                         meta_loss="log_ratio")


def _run(out, steps, task=ENSEMBLE, **run):
    return meta_train("l2o_scale", TaskChoice(task, validation_tasks=2), CONFIG,
                      RunOptions(str(out), meta_steps=steps, progress=False, checkpoint_every=3,
                                 **run), log=lambda *_: None)


def test_meta_train_leaves_the_compilation_cache_to_the_cli(tmp_path, monkeypatch):
    """The library does not switch JAX's global compilation cache on; the CLI does, where
    its process starts."""
    jax.config.update("jax_compilation_cache_dir", None)
    _run(tmp_path / "run", 1, task="quadratic")
    assert jax.config.jax_compilation_cache_dir is None
    monkeypatch.setenv("HYPERADAM_OPTAX_CACHE", str(tmp_path / "cache"))
    assert enable_compilation_cache() == str(tmp_path / "cache")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")


@pytest.mark.slow
def test_ensemble_run_draws_every_family_and_resumes_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERADAM_OPTAX_CACHE", str(tmp_path / "cache"))
    enable_compilation_cache()  # as the CLI does
    _run(tmp_path / "full", 8)
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text()
            .splitlines()]
    drawn = [r["family"] for r in rows if "family" in r]
    assert len(drawn) == 8 and set(drawn) == {0, 1}  # one family per meta-step, both drawn
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["ensemble"] == ["quadratic", "l2o-bowls"]
    vals = [r["validation_loss"] for r in rows if "validation_loss" in r]
    assert all(np.isfinite(vals))

    _run(tmp_path / "split", 5)
    _run(tmp_path / "split", 8, resume=True)
    jax.tree.map(np.testing.assert_array_equal,
                 ha.load_meta_params(tmp_path / "full" / "meta_params.npz"),
                 ha.load_meta_params(tmp_path / "split" / "meta_params.npz"))
    resumed = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text()
               .splitlines()]
    assert [r["family"] for r in resumed if "family" in r] == drawn  # the resume redraws alike
    _run(tmp_path / "other-seed", 8, seed=1)
    other = [json.loads(line) for line in (tmp_path / "other-seed" / "metrics.jsonl")
             .read_text().splitlines()]
    assert [r["family"] for r in other if "family" in r] != drawn  # the draw is the seed's
    assert any((tmp_path / "cache").iterdir())  # the persistent compilation cache is used


@pytest.mark.slow
def test_resume_refuses_another_ensemble(tmp_path):
    _run(tmp_path / "run", 2)
    with pytest.raises(ValueError, match="different configuration"):
        _run(tmp_path / "run", 4, task="quadratic,l2o-functions-2d", resume=True)


@pytest.mark.slow
def test_validate_on_other_families(tmp_path):
    """Checkpoints scored on families that are not trained on: the score is the mean log of
    each family's, recorded in the run's identity."""
    from hyperadam_optax.meta.learned import learned_optimizer
    from hyperadam_optax.meta.validation import VALIDATION_SEED, make_evaluator
    from hyperadam_optax.tasks import make_task

    card = meta_train("l2o_scale", TaskChoice("quadratic", validation_tasks=2,
                                              validate_on="l2o-bowls,val-digits-linear"),
                      CONFIG, RunOptions(str(tmp_path / "run"), meta_steps=2, progress=False,
                                         checkpoint_every=2), log=lambda *_: None)
    identity = json.loads((tmp_path / "run" / "config.json").read_text())
    assert identity["validate_on"] == ["l2o-bowls", "val-digits-linear"]
    learned = learned_optimizer("l2o_scale")
    theta = ha.load_meta_params(tmp_path / "run" / "meta_params.npz")
    scores = [make_evaluator(learned, make_task(name), num_tasks=2, steps=10,
                             seed=VALIDATION_SEED)(theta)
              for name in ("l2o-bowls", "val-digits-linear")]
    assert card["final_validation_loss"] == pytest.approx(float(np.mean(np.log(scores))),
                                                          rel=1e-5)
