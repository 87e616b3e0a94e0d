"""Row blocks updated in place: a per-coordinate update of a large leaf with no leaf-sized
temporaries.

XLA:CPU takes a computation's temporaries from a fresh memory mapping on every call, which
the kernel must zero: a learned update of one leaf of 1M coordinates writes its (N, 20..80)
intermediates to 500-960 MiB of new memory per step, and that costs as much CPU time as the
update's arithmetic (``python benchmarks/update_floor.py``, column "fresh MiB").
:func:`map_rows_in_place` instead runs the per-coordinate work over blocks of rows in a
``fori_loop`` whose carries are the state buffers themselves, so a donated state is updated
in place and the temporaries are one block's, reused from block to block.

The loop writes behind: iteration ``i`` writes block ``i - 1``'s results (carried, small), then
reads block ``i``. A fusion that wrote a state buffer in place while reading another one would
make XLA copy the whole buffer on every iteration; this way the writes read only the carried
block. The last block is shifted back to end at the last row; its rows that an earlier block
already did keep their new values (``valid`` is False there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

#: Rows per block on a CPU (about 2-6 MiB of temporaries per block at J = 20): measured fastest
#: of 4096-32768 for HyperAdam at 1M coordinates (research/record.md, issue 28).
CPU_BLOCK_ROWS = 8192


def default_block_rows() -> int:
    """``block_rows=None``: :data:`CPU_BLOCK_ROWS` in a single-device CPU process, else 0 (no
    blocks: on GPU/TPU the fused kernels have no such cost, and a loop over the blocks of a
    parameter sharded over several devices would gather it)."""
    return CPU_BLOCK_ROWS if jax.default_backend() == "cpu" and jax.device_count() == 1 else 0


def resolve_block_rows(block_rows: int | None) -> int:
    """``block_rows`` checked (an int >= 0; 0 turns blocks off), or the default for None."""
    if block_rows is None:
        return default_block_rows()
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 0:
        raise ValueError(f"block_rows must be None (automatic), 0 (off) or a positive int, "
                         f"got {block_rows!r}")
    return block_rows


#: A leaf goes by blocks from this many blocks on: below 8 x 8,192 rows the whole-leaf
#: update's temporaries are reused from call to call and it is the faster (measured with
#: ``python benchmarks/update_floor.py --sizes 32768,65536``: 1.3-1.4x slower by blocks at
#: 32,768 rows, 1.3-1.8x faster at 65,536).
MIN_BLOCKS = 8


def use_blocks(rows: int, block_rows: int) -> bool:
    """Whether a leaf of ``rows`` coordinates goes by blocks: at least :data:`MIN_BLOCKS`."""
    return block_rows > 0 and rows >= MIN_BLOCKS * block_rows


def map_rows_in_place(
    fn: Callable,
    fields: Sequence[jax.Array],
    inputs: Sequence[jax.Array],
    block_rows: int,
    acc,
):
    """``fn`` over blocks of rows; ``fields`` updated in place, ``inputs`` only read.

    Every array has the same number of rows on axis 0. ``fn(field_blocks, input_blocks,
    valid) -> (new_field_blocks, increment)`` sees ``block_rows`` rows of each; ``valid``
    (``(block_rows,)`` bools) is False on rows an earlier block did (the last block overlaps
    the one before it), which ``fn`` must leave out of ``increment``; their new values are
    dropped here. Returns the new fields (each in its field's dtype) and ``acc`` plus the sum
    of the increments.
    """
    rows = fields[0].shape[0]
    if rows < block_rows:
        raise ValueError(f"map_rows_in_place needs at least block_rows={block_rows} rows, "
                         f"got {rows}")
    num_blocks = -(-rows // block_rows)
    dtypes = [f.dtype for f in fields]

    def read(x, start):
        return jax.lax.dynamic_slice_in_dim(x, start, block_rows, 0)

    def write(x, block, start):
        return jax.lax.dynamic_update_slice_in_dim(x, block, start, 0)

    def body(i, carry):
        fields, pending, pending_start, acc = carry
        fields = [write(f, p, pending_start) for f, p in zip(fields, pending)]
        start = jnp.minimum(i * block_rows, rows - block_rows).astype(jnp.int32)
        valid = start + jnp.arange(block_rows) >= i * block_rows
        blocks = [_from_bits(read(f, start), dt) for f, dt in zip(fields, dtypes)]
        new, increment = fn(blocks, [read(x, start) for x in inputs], valid)
        new = [_bits(jnp.where(valid.reshape((-1,) + (1,) * (b.ndim - 1)), x.astype(b.dtype), b))
               for x, b in zip(new, blocks)]
        return fields, new, start, jax.tree.map(jnp.add, acc, increment)

    fields = [_bits(f) for f in fields]
    first = [read(f, 0) for f in fields]
    fields, pending, start, acc = jax.lax.fori_loop(
        0, num_blocks, body, (fields, first, jnp.zeros([], jnp.int32), acc))
    return [_from_bits(write(f, p, start), dt) for f, p, dt in zip(fields, pending, dtypes)], acc


def _bits(x: jax.Array) -> jax.Array:
    """A 16-bit float field as its bits: XLA:CPU computes a bf16/f16 in-place write in
    float32, over the whole field (measured: 15x slower than the whole-leaf update)."""
    return jax.lax.bitcast_convert_type(x, jnp.uint16) if x.dtype.itemsize == 2 else x


def _from_bits(x: jax.Array, dtype) -> jax.Array:
    return jax.lax.bitcast_convert_type(x, dtype) if x.dtype != dtype else x


def by_blocks(fn: Callable, block_rows: int) -> Callable:
    """A coordinatewise leaf update ``fn(g, *fields) -> (d, *new_fields)`` (``g`` of the
    leaf's shape, each field ``leaf.shape + trailing``) that runs over blocks of rows in
    place for a leaf of at least two blocks, as it is for a smaller one."""
    def apply(g, *fields):
        if not use_blocks(g.size, block_rows):
            return fn(g, *fields)
        as_rows = [f.reshape((g.size,) + f.shape[g.ndim:]) for f in fields]

        def block(blocks, inputs, valid):
            d, *new = fn(inputs[0], *blocks[:-1])
            return (*new, d), 0.0

        (*new, d), _ = map_rows_in_place(block, as_rows + [jnp.zeros(g.size, g.dtype)],
                                         [g.reshape(-1)], block_rows, 0.0)
        return (d.reshape(g.shape), *(x.reshape(f.shape) for x, f in zip(new, fields)))

    return apply
