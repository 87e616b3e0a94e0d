"""The one registry of learned optimizers: every consumer reads it, every entry is complete."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hyperadam_optax as ha
from hyperadam_optax.evaluation import parse_optimizer
from hyperadam_optax.io import PRETRAINED, load_meta_params, save_meta_params
from hyperadam_optax.meta import learned_optimizer
from hyperadam_optax.optimizers import OPTIMIZERS, get_optimizer
from hyperadam_optax.tasks import TASKS

SPECS = list(OPTIMIZERS.values())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_entry_is_consistent(spec, tmp_path):
    theta = spec.init_meta_params(jax.random.key(0))
    assert isinstance(theta, spec.params_type)
    found = {k: tuple(v.shape) for k, v in theta._asdict().items()}
    assert spec.expected_shapes(found) == found
    assert spec.recipe.task in TASKS
    # Saved and loaded by its type's name, through the registry.
    save_meta_params(tmp_path / "t.npz", theta)
    jax.tree.map(np.testing.assert_array_equal, load_meta_params(tmp_path / "t.npz"), theta)
    # The alias's default rate is the spec's, and without weights it does no file IO.
    assert inspect.signature(spec.make).parameters["learning_rate"].default == \
        spec.default_learning_rate
    with pytest.raises(ValueError, match="meta_params is required"):
        spec.make()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_consumers_read_the_registry(spec):
    """Meta-training, evaluation and the package-level alias build the same transform."""
    assert spec.name in PRETRAINED
    theta = ha.load_pretrained(spec.name)
    grads = {"w": jnp.linspace(-1.0, 1.0, 5), "b": jnp.array([0.3, -2.0])}

    def first_update(tx):
        return tx.update(grads, tx.init(grads))[0]

    want = first_update(spec.make(spec.default_learning_rate, theta))
    package_alias = getattr(ha, spec.name)
    assert inspect.signature(package_alias) == inspect.signature(spec.make)
    for tx in (package_alias(), learned_optimizer(spec.name).make(theta),
               parse_optimizer(spec.name).make()):
        jax.tree.map(np.testing.assert_array_equal, first_update(tx), want)
    learned = learned_optimizer(spec.name)
    assert (learned.meta_loss, learned.default_task, learned.default_meta_lr) == \
        (spec.recipe.meta_loss, spec.recipe.task, spec.recipe.meta_lr)


def test_names_and_aliases():
    assert list(OPTIMIZERS) == ["hyperadam", "rnnprop", "dm_optimizer", "l2o_scale"]
    assert get_optimizer("dm") is get_optimizer("dm_optimizer")
    assert get_optimizer("l2o-scale") is get_optimizer("l2o_scale")
    with pytest.raises(ValueError, match="unknown learned optimizer 'lion'; expected one of"):
        get_optimizer("lion")
