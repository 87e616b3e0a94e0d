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


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_piece_of_the_add_an_optimizer_recipe_is_there(spec):
    """docs/DESIGN.md "Where to add a learned optimizer", to the letter: a registered
    optimizer missing one of the pieces fails here, naming it."""
    import pathlib
    import sys

    root = pathlib.Path(ha.__file__).resolve().parents[1]
    module = sys.modules[spec.make.__module__]
    state = module.__dict__.get(spec.params_type.__name__.replace("Params", "State"))
    missing = [piece for piece, ok in [
        ("a <name>_shapes function", spec.shapes.__name__.endswith("_shapes")),
        ("an init_<name>_meta_params function", spec.init_meta_params.__name__.startswith("init_")
         and spec.init_meta_params.__name__.endswith("_meta_params")),
        ("its State NamedTuple", state is not None),
        ("'paper' (its authors' initialisation) among its inits", "paper" in spec.inits),
        (f"scale_by_{spec.name}", hasattr(module, f"scale_by_{spec.name}")),
        (f"hyperadam_optax.{spec.name} (the alias with shipped weights)",
         hasattr(ha, spec.name)),
        ("the package's exports of its Params, State, init and scale_by",
         {spec.params_type.__name__, getattr(state, "__name__", "?"), spec.init_meta_params.__name__,
          f"scale_by_{spec.name}"} <= set(ha.__all__)),
        (f"pretrained/{spec.name}.npz and .json", spec.name in PRETRAINED
         and (root / "hyperadam_optax" / "pretrained" / f"{spec.name}.json").exists()),
        ("an entry in tests/optimizers/test_conformance.py",
         spec.name in (root / "tests" / "optimizers" / "test_conformance.py").read_text()),
        ("a float64 reference test", any(
            spec.name.split("_")[0] in p.name or spec.name in p.read_text()
            for p in (root / "tests" / "optimizers").glob("test_*.py")
            if "float64" in p.read_text() and p.name != "test_conformance.py")),
    ] if not ok]
    assert not missing, f"{spec.name} lacks {missing}"


def test_optimizer_options_are_declared_once_and_are_real_arguments():
    """Each optimizer's ``meta-train`` flags come from its spec: no flag is declared twice in
    the registry (the CLI has one parser), and a spec naming an argument its init or alias
    does not take is refused when it is made."""
    import dataclasses

    from hyperadam_optax.optimizers.registry import OPTIMIZERS
    from hyperadam_optax.optimizers.spec import OptimizerOption

    flags = [o.flag for spec in OPTIMIZERS.values() for o in spec.options]
    assert len(flags) == len(set(flags)), flags
    hyperadam = OPTIMIZERS["hyperadam"]
    with pytest.raises(ValueError, match="option 'hidden' is not an argument of its 'init'"):
        dataclasses.replace(hyperadam, options=(OptimizerOption("hidden", "init", help=""),))
    with pytest.raises(ValueError, match="option 'warm_start_step' is not an argument of its "
                                         "'alias'"):
        dataclasses.replace(hyperadam,
                            options=(OptimizerOption("warm_start_step", "alias", help=""),))
