"""The validation families: split once into selection and report, none in a training
ensemble, each a real task that trains."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperadam_optax import evaluation as ev
from hyperadam_optax import meta as mt
from hyperadam_optax.tasks.registry import (
    ENSEMBLES,
    REPORT_FAMILIES,
    SELECTION_FAMILIES,
    VALIDATION_FAMILIES,
    ensemble_members,
    get_task,
)
from hyperadam_optax.tasks.tabular import load_tabular


def test_the_split_is_fixed_and_disjoint_from_training():
    assert len(VALIDATION_FAMILIES) >= 10 and set(VALIDATION_FAMILIES) == (
        set(SELECTION_FAMILIES) | set(REPORT_FAMILIES))
    assert not set(SELECTION_FAMILIES) & set(REPORT_FAMILIES)
    trained = {n for members in ENSEMBLES.values() for n in members}
    assert not trained & set(VALIDATION_FAMILIES)
    assert ev.SUITES["selection"] == SELECTION_FAMILIES and ev.SUITES["report"] == REPORT_FAMILIES
    # "validation" keeps naming what it named before the split: the families that choose.
    assert ensemble_members("validation") == ensemble_members("selection") == SELECTION_FAMILIES
    assert [get_task(n).horizon for n in REPORT_FAMILIES].count(1000) >= 2  # long-horizon ones


@pytest.mark.parametrize("validate_on", ["val-wine-mlp-1000", "val-digits-linear,val-diabetes-mlp"])
def test_a_report_family_never_chooses_a_checkpoint(tmp_path, validate_on):
    with pytest.raises(ValueError, match="are report families"):
        mt.meta_train("hyperadam", mt.TaskChoice("quadratic", validate_on=validate_on),
                      run=mt.RunOptions(str(tmp_path / "r")))
    assert not (tmp_path / "r").exists()


def test_tabular_data_are_standardised():
    for name, features in (("breast_cancer", 30), ("wine", 13), ("diabetes", 10)):
        d = load_tabular(name)
        assert d.x.shape[1] == features and d.x.dtype == np.float32
        np.testing.assert_allclose(d.x.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(d.x.std(0), 1.0, atol=1e-4)
    assert load_tabular("diabetes").y.dtype == np.float32
    assert set(np.unique(load_tabular("wine").y)) == {0, 1, 2}


@pytest.mark.slow  # 30 s for the five
@pytest.mark.parametrize("name", REPORT_FAMILIES)
def test_report_family_trains_with_adam(name):
    """Each new family is a real task: 150 Adam steps at a plain rate lower its loss well
    below the start's (a jit(vmap) of 2 runs, so the family batches too)."""
    family = get_task(name).build(None)
    tx = optax.adam(0.01)

    def run(key):
        k_init, k_run = jax.random.split(key)
        task = family.sample_task(k_init)
        params = family.init(k_init, task)

        def step(carry, k):
            params, state = carry
            loss, grads = jax.value_and_grad(family.loss)(params, family.sample_batch(k, task), task)
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        _, losses = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(k_run, 150))
        return losses

    losses = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), 2))
    assert bool(jnp.all(jnp.isfinite(losses)))
    first, last = float(losses[:, :5].mean()), float(losses[:, -20:].mean())
    assert last < 0.7 * first, (name, first, last)


def test_a_long_horizon_family_is_scored_at_its_horizon():
    out = ev.evaluate_suite("report", ["sgd@0.05"], runs=2, steps=7, progress=False,
                            tasks=["val-wine-mlp-1000", "val-breast-cancer-logistic"])
    assert out["steps"] == {"val-wine-mlp-1000": 1000, "val-breast-cancer-logistic": 7}
    assert out["results"]["val-wine-mlp-1000"]["sgd@0.05"].curve.shape == (2, 1000)
