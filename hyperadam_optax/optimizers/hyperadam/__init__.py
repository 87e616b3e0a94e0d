"""HyperAdam (Wang, Sun & Xu, AAAI 2019): a learnable task-adaptive Adam, as an optax transform.

- :mod:`.core`: Alg. 2 alone: the meta-parameters, their shapes, the state,
  :func:`scale_by_hyperadam`, the alias :func:`hyperadam`, :func:`hyperadam_internals`.
- :mod:`.init`: initial meta-parameters: the authors' initialisation, Adam as a special case
  (:func:`adam_meta_params`), the Adam warm start and its decay clock.
- :mod:`.rewrite`: research-only weight rewriters (``hyperadam_optax.contrib``).

Its registry entry :data:`SPEC` (shapes, its paper's training recipe) is here.
"""

from hyperadam_optax.optimizers.hyperadam.core import (
    NORM_EPS,
    NORMALIZATIONS,
    SIZE_FIELDS,
    STATE_CELL_INPUTS,
    HyperAdamParams,
    HyperAdamState,
    check_normalization,
    hyperadam,
    hyperadam_internals,
    hyperadam_shapes,
    num_candidates,
    scale_by_hyperadam,
)
from hyperadam_optax.optimizers.hyperadam.init import (
    CLOCKS,
    adam_meta_params,
    check_clock,
    decay_counter_weights,
    gate_columns,
    init_hyperadam_meta_params,
)
from hyperadam_optax.optimizers.spec import (
    OptimizerOption,
    OptimizerSpec,
    TrainingRecipe,
    parse_bool,
    parse_number_pair,
    parse_positive_float,
)

#: The name every optimizer's initialiser had before ``init_{name}_meta_params``; public API.
init_meta_params = init_hyperadam_meta_params

#: HyperAdam in the optimizer registry: α = 0.005, J = 20; the authors' training recipe
#: (Random Scaling + convex MNIST problem, mean of the losses, meta Adam 1e-4).
SPEC = OptimizerSpec(
    name="hyperadam",
    params_type=HyperAdamParams,
    size_field=SIZE_FIELDS,
    shapes=hyperadam_shapes,
    init_meta_params=init_hyperadam_meta_params,
    make=hyperadam,
    default_learning_rate=0.005,
    recipe=TrainingRecipe(task="mnist-mlp-rs", meta_loss="mean", meta_lr=1e-4),
    inits=("paper", "adam"),
    options=(
        OptimizerOption("warm_start_step", "init", parse=parse_positive_float,
                        help="with --init adam: the warm start is Adam at rate 0.005 x this "
                             "(default 1)"),
        OptimizerOption("warm_start_betas", "init", parse=parse_number_pair, metavar="B1,B2",
                        help="with --init adam: the warm start's Adam decay rates "
                             "(default 0.9,0.999)"),
        OptimizerOption("warm_start_decay", "init", parse=parse_number_pair,
                        metavar="HORIZON,FLOOR",
                        help="with --init adam: the warm start's rate falls about linearly to "
                             "FLOOR times itself over HORIZON steps, then stays (default: "
                             "constant)"),
        OptimizerOption("warm_start_clock", "init", choices=CLOCKS,
                        help="with --warm-start-decay: where the clock's rate lives, a cell "
                             "input (default) or an input gate's logit (log space: "
                             "meta-training moves the horizon by relative amounts)"),
        OptimizerOption("normalization", "alias", choices=NORMALIZATIONS,
                        help="how its networks' inputs are normalised over the coordinates; "
                             "global_l2 (the authors', the default) or global_rms (inputs of "
                             "size 1 on problems of any size)"),
        OptimizerOption("sign_agreement", "alias", parse=parse_bool, metavar="true|false",
                        help="whether the StateCell also reads the gradient's sign agreement "
                             "(weights whose theta_p has two rows, e.g. --init-from a file of "
                             "hyperadam_optax.contrib.with_sign_agreement_input)"),
    ),
)

__all__ = ["CLOCKS", "NORMALIZATIONS", "NORM_EPS", "SIZE_FIELDS", "SPEC", "STATE_CELL_INPUTS",
           "HyperAdamParams", "HyperAdamState", "adam_meta_params", "check_clock",
           "check_normalization", "decay_counter_weights", "gate_columns", "hyperadam",
           "hyperadam_internals", "hyperadam_shapes", "init_hyperadam_meta_params",
           "init_meta_params", "num_candidates", "scale_by_hyperadam"]
