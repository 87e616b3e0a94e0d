"""Research-only pieces outside the core API (as ``optax.contrib``): rewriters of HyperAdam
weights that take exactly the given weights' steps but expose something new to
meta-training. Nothing shipped needs them; the ``research/`` scripts do."""

from hyperadam_optax.optimizers.hyperadam.rewrite import (
    global_rms_equivalent,
    open_input_path,
    with_sign_agreement_input,
)

__all__ = ["global_rms_equivalent", "open_input_path", "with_sign_agreement_input"]
