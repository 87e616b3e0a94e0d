"""Odd uses of the Python API found by the reliability sweep: each refused with the expected
value named (docs/refusals.md)."""

import jax
import jax.numpy as jnp
import optax
import pytest

import hyperadam_optax as ha
from hyperadam_optax import evaluation as ev
from hyperadam_optax import meta as mt
from hyperadam_optax import tasks


@pytest.mark.parametrize("make, message", [
    (lambda: ha.hyperadam(eps=-1.0), r"eps must be in \(0.0, 1.0\], got -1.0"),
    (lambda: ha.hyperadam(eps=float("nan")), "eps must be in"),
    (lambda: ha.rnnprop(b1=1.0), r"b1 must be in \[0.0, 1.0\)"),
    (lambda: ha.rnnprop(output_scale=0.0), "output_scale must be in"),
    (lambda: ha.adam_meta_params(4, 1.5, 0.9), r"b1 must be in \(0.0, 1.0\), got 1.5"),
    (lambda: mt.MetaTrainConfig(clip_norm=-1.0), "clip_norm must be None or positive and finite"),
    (lambda: mt.MetaTrainConfig(clip_norm=float("nan")), "clip_norm must be None or positive"),
    (lambda: mt.MetaTrainConfig(remat=1), "remat must be a bool, got 1"),
    (lambda: mt.MetaTrainConfig(second_order="yes"), "second_order must be a bool"),
    (lambda: mt.TaskChoice("quadratic", validation_tasks=0),
     "validation_tasks must be a positive int, got 0"),
    (lambda: mt.TaskChoice("quadratic", validation_metric="max"), "validation_metric must be"),
    (lambda: mt.RunOptions(meta_steps=0), "meta_steps must be a positive int, got 0"),
    (lambda: mt.RunOptions(seed=2**32), r"seed must be an int in \[0, 2\*\*32\)"),
    (lambda: mt.RunOptions(resume="yes"), "resume must be a bool"),
    (lambda: mt.OptimizerChoice("rnnprop", options={"normalization": "global_rms"}),
     r"\['normalization'\]: not arguments of rnnprop"),
    (lambda: mt.OptimizerChoice("rnnprop", init_options={"warm_start_step": 2.0}),
     "warm_start_step are not initialisation options of rnnprop"),
    (lambda: mt.OptimizerChoice("dm", init="adam"),
     "init 'adam' is not an initialisation of dm_optimizer"),
    (lambda: mt.meta_train("hyperadam", "quadratic", run={"meta_steps": 2}),
     "run must be a RunOptions, got dict"),
    (lambda: ev.evaluate_suite("table2", ["adam@0.01"], runs=0, steps=3, progress=False),
     "runs must be a positive int, got 0"),
    (lambda: ev.evaluate_suite("table2", ["adam@0.01"], runs=2, steps=0, progress=False),
     "steps must be a positive int, got 0"),
    (lambda: ev.evaluate_suite("table2", "adam@0.01", runs=2, steps=2, progress=False),
     "expected a non-empty list of optimizer names, got 'adam@0.01'"),
    (lambda: ev.run_protocol(lambda _: optax.sgd(0.1), tasks.random_quadratics(3), steps=3,
                             runs=0, seed=0), "runs must be a positive int"),
])
def test_odd_api_use_is_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_internals_of_a_state_that_is_not_hyperadams():
    with pytest.raises(TypeError, match="state must be the HyperAdamState"):
        ha.hyperadam_internals(ha.load_pretrained("hyperadam"), {"w": jnp.ones(2)}, None)


def test_traced_hyperparameters_are_not_checked():
    """inject_hyperparams passes arrays: the checks that need a concrete number skip them."""
    tx = optax.inject_hyperparams(ha.rnnprop)(learning_rate=1.0, output_scale=0.1)
    params = {"w": jnp.ones(3)}
    updates, _ = jax.jit(tx.update)({"w": jnp.ones(3)}, tx.init(params), params)
    assert bool(jnp.isfinite(updates["w"]).all())
