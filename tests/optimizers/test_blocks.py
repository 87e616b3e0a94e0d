"""Row blocks updated in place (optimizers/blocks.py) and HyperAdam's blocked path: the same
steps as the whole-leaf path (float64 reference, every option), no leaf-sized temporaries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hyperadam_optax as ha
from hyperadam_optax.optimizers.blocks import (
    CPU_BLOCK_ROWS,
    default_block_rows,
    map_rows_in_place,
    resolve_block_rows,
    use_blocks,
)
from tests.helpers.reference_hyperadam import ReferenceHyperAdam
from tests.optimizers.test_hyperadam import _gradient_sequence, _random_theta, _updates


@pytest.mark.parametrize("rows,block", [(12, 4), (13, 4), (9, 8), (8, 8), (100, 7)])
def test_map_rows_in_place_equals_the_whole_array_computation(rows, block):
    """Fields updated from themselves and from each other and an input; the accumulated sum
    counts every row once, also where the last block overlaps the one before it."""
    a = jnp.arange(rows * 3, dtype=jnp.float32).reshape(rows, 3) / 7.0
    b = jnp.sin(jnp.arange(rows, dtype=jnp.float32))
    x = jnp.cos(jnp.arange(rows, dtype=jnp.float32))

    def step(a, b, x):
        return a * 2.0 + (b + x)[:, None], b - a.sum(axis=1)

    def fn(blocks, inputs, valid):
        new_a, new_b = step(*blocks, *inputs)
        return (new_a, new_b), jnp.sum(jnp.where(valid, new_b, 0.0))

    (got_a, got_b), total = jax.jit(
        lambda a, b, x: map_rows_in_place(fn, [a, b], [x], block, jnp.float32(0.0)))(a, b, x)
    want_a, want_b = step(a, b, x)
    np.testing.assert_allclose(got_a, want_a, rtol=1e-6)
    np.testing.assert_allclose(got_b, want_b, rtol=1e-6)
    np.testing.assert_allclose(total, jnp.sum(want_b), rtol=1e-5)


def test_map_rows_in_place_refuses_fewer_rows_than_a_block():
    with pytest.raises(ValueError, match="at least block_rows=8 rows, got 5"):
        map_rows_in_place(lambda b, i, v: (b, 0.0), [jnp.zeros(5)], [], 8, 0.0)


@pytest.mark.parametrize("name", ["hyperadam", "rnnprop", "dm_optimizer", "l2o_scale"])
@pytest.mark.parametrize("bad", [-1, 2.5, True, "8"])
def test_bad_block_rows_are_refused_naming_the_argument(name, bad):
    with pytest.raises(ValueError, match="block_rows must be None"):
        getattr(ha, name)(block_rows=bad)


def test_default_block_rows_is_on_for_a_single_cpu_device_only():
    want = CPU_BLOCK_ROWS if jax.default_backend() == "cpu" and jax.device_count() == 1 else 0
    assert default_block_rows() == want == resolve_block_rows(None)
    assert resolve_block_rows(0) == 0 and resolve_block_rows(64) == 64
    assert not use_blocks(511, 64) and use_blocks(512, 64) and not use_blocks(10**6, 0)


@pytest.mark.parametrize("normalization,sign_agreement",
                         [("global_l2", False), ("global_rms", True)])
def test_blocked_hyperadam_matches_float64_reference(x64, normalization, sign_agreement):
    """Both leaves by blocks of 3 rows (the last block of each overlaps), 15 steps."""
    theta = _random_theta(0, j=5, dtype=jnp.float64)
    if sign_agreement:
        theta = ha.contrib.with_sign_agreement_input(theta, jax.random.key(14), scale=2.0)
    grads = _gradient_sequence(jax.random.key(1), [(40,), (5, 5)], 15)
    grads = [jax.tree.map(lambda x: x.astype(jnp.float64), g) for g in grads]
    params = {"w0": jnp.zeros(40, jnp.float64), "w1": jnp.zeros((5, 5), jnp.float64)}
    got = _updates(ha.scale_by_hyperadam(theta, normalization=normalization,
                                         sign_agreement=sign_agreement, block_rows=3),
                   params, grads)
    ref = ReferenceHyperAdam(theta, p=65, normalization=normalization)
    for g, u in zip(grads, got):
        flat = [np.concatenate([np.asarray(t["w0"]).ravel(), np.asarray(t["w1"]).ravel()])
                for t in (g, u)]
        np.testing.assert_allclose(flat[1], ref.direction(flat[0]), rtol=1e-10, atol=1e-12)


def _run(tx, params, steps=6, seed=3):
    grads = _gradient_sequence(jax.random.key(seed), [p.shape for p in params.values()], steps)
    grads = [dict(zip(params, g.values())) for g in grads]
    state = tx.init(params)
    update = jax.jit(tx.update, donate_argnums=(1,))
    for g in grads:
        u, state = update(g, state)
    return u, state


BLOCKED_OPTIMIZERS = ("hyperadam", "rnnprop", "dm_optimizer", "l2o_scale")


@pytest.mark.parametrize("name", BLOCKED_OPTIMIZERS)
def test_blocked_leaves_mixed_with_whole_leaves_take_the_same_steps(name):
    """The shipped weights on a tree of a blocked leaf, a blocked 2-D leaf and a small whole
    leaf (HyperAdam's global norms, L2O-Scale's mean log rate and Global RNN span both
    kinds): updates and every state field equal to float32 rounding after 6 steps."""
    params = {"big": jnp.zeros((1000,)), "mat": jnp.zeros((60, 7)), "small": jnp.zeros((5,))}
    make = getattr(ha, name)
    whole = _run(make(block_rows=0), params)
    blocked = _run(make(block_rows=32), params)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(blocked)):
        # Relative to each field's size: sums over blocks round in another order, and a
        # recurrent state carries that rounding on through 6 steps.
        scale = float(jnp.max(jnp.abs(a.astype(jnp.float32)))) + 1e-12
        assert float(jnp.max(jnp.abs(b.astype(jnp.float32) - a))) <= 2e-5 * scale


def test_blocked_bfloat16_state_stays_within_bfloat16_rounding():
    """The blocked path reads the new h back from the bf16 state where the whole-leaf path
    uses it unrounded: the steps differ at bf16 rounding, no more."""
    params = {"big": jnp.zeros((1000,))}
    u0, _ = _run(ha.hyperadam(block_rows=0, state_dtype=jnp.bfloat16), params)
    u1, s1 = _run(ha.hyperadam(block_rows=64, state_dtype=jnp.bfloat16), params)
    assert s1[0].m["big"].dtype == jnp.bfloat16
    np.testing.assert_allclose(u1["big"], u0["big"], rtol=0.05, atol=1e-3)


@pytest.mark.parametrize("name", BLOCKED_OPTIMIZERS)
def test_blocked_update_has_no_leaf_sized_temporaries(name):
    """XLA's own buffer accounting of the compiled update at 2^16 and 2^17 coordinates: the
    whole-leaf path's temporary memory doubles with the leaf and exceeds the state; the
    blocked path's stays the same (one block's) and below the state."""
    temp, state_bytes = {}, {}
    for n in (1 << 16, 1 << 17):
        params = {"w": jax.ShapeDtypeStruct((n,), jnp.float32)}
        for rows in (0, 1024):
            tx = getattr(ha, name)(block_rows=rows)
            state = jax.eval_shape(tx.init, params)
            compiled = jax.jit(tx.update, donate_argnums=(1,)).lower(params, state).compile()
            temp[rows, n] = compiled.memory_analysis().temp_size_in_bytes
            state_bytes[n] = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    small, large = 1 << 16, 1 << 17
    assert temp[0, large] >= 1.9 * temp[0, small] and temp[0, small] > state_bytes[small], temp
    assert temp[1024, large] <= 1.05 * temp[1024, small] < state_bytes[small], temp


def test_blocked_path_under_vmap_and_grad_equals_the_whole_leaf_path():
    """Meta-training differentiates through updates of vmapped tasks: both paths give the
    same meta-gradient."""
    theta = _random_theta(5, j=4)
    grads = _gradient_sequence(jax.random.key(6), [(2, 50)], 3)

    def loss(theta, rows):
        tx = ha.scale_by_hyperadam(theta, block_rows=rows)

        def one_task(g0):
            state = tx.init({"w0": g0})
            total = 0.0
            for g in grads:
                u, state = tx.update({"w0": g["w0"][0] + g0}, state)
                total = total + jnp.sum(u["w0"] ** 2)
            return total

        return jnp.sum(jax.vmap(one_task)(grads[0]["w0"]))

    whole = jax.grad(loss)(theta, 0)
    blocked = jax.grad(loss)(theta, 6)
    for a, b in zip(whole, blocked):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
