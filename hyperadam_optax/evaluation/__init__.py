"""Evaluation (layer 4): the paper's protocol, tuned baselines, suites, reports, introspection.

Protocol (the authors' code, reference notes): N runs with fresh initialisations and the
same seeds for every optimizer (paired); each run trains for ``steps`` steps; its reported
loss is the loss of the FINAL parameters averaged over the minibatches seen during the run.
No Random Scaling and no convex term. Runs are ``vmap``-ped: one compiled program per
(optimizer, task); a baseline's learning-rate grid is ``vmap``-ped too.
"""

from hyperadam_optax.evaluation.baselines import (
    BASELINES,
    LR_GRID,
    TUNING_SEED_OFFSET,
    search_grid,
    tune_learning_rate,
)
from hyperadam_optax.evaluation.introspection import plot_trace, trace_hyperadam
from hyperadam_optax.evaluation.protocol import RunResult, paired_difference, run_protocol, test_metrics
from hyperadam_optax.evaluation.reports import (
    comparison_table,
    load_results,
    markdown_table,
    paired_comparison,
    plot_curves,
    save_evaluation,
)
from hyperadam_optax.evaluation.suites import (
    SUITES,
    EvaluatedOptimizer,
    check_request,
    evaluate_suite,
    parse_optimizer,
    parse_optimizers,
    suite_tasks,
)

__all__ = ["BASELINES", "LR_GRID", "SUITES", "TUNING_SEED_OFFSET", "EvaluatedOptimizer",
           "RunResult", "check_request", "comparison_table", "evaluate_suite", "load_results",
           "markdown_table",
           "paired_comparison", "paired_difference", "parse_optimizer", "parse_optimizers",
           "plot_curves",
           "plot_trace", "run_protocol", "save_evaluation", "search_grid", "suite_tasks",
           "test_metrics",
           "trace_hyperadam", "tune_learning_rate"]
