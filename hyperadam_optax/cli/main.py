"""Command line: ``hyperadam-optax demo``, ``meta-train``, ``evaluate`` and ``compare``."""

from __future__ import annotations

import argparse
import re

from hyperadam_optax.optimizers.spec import parse_positive_float


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**32), got {text}")
    return value


def _names(text: str) -> tuple[str, ...]:
    """``A,B[1:],C[:,2:3]`` -> ``("A", "B[1:]", "C[:,2:3]")``: commas inside [] do not split."""
    names = tuple(re.split(r",(?![^\[]*\])", text))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return names


def _argparse_type(parse):
    """``parse`` with its ``ValueError`` shown by argparse as a usage error."""

    def parse_or_refuse(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse_or_refuse.__name__ = getattr(parse, "__name__", "value")
    return parse_or_refuse


_positive_float = _argparse_type(parse_positive_float)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperadam-optax",
                                     description="HyperAdam and learned optimizers for optax.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_meta_train(sub)
    _add_evaluate(sub)
    _add_compare(sub)
    return parser


def _add_demo(sub) -> None:
    from hyperadam_optax.cli.demo import ADAM_LR

    demo = sub.add_parser("demo", help="train the paper's MNIST MLP with HyperAdam and Adam")
    demo.add_argument("--steps", type=_positive_int, default=200)
    demo.add_argument("--runs", type=_positive_int, default=10,
                      help="independent runs (seeds) per optimizer, vmapped")
    demo.add_argument("--seed", type=_seed, default=0)
    demo.add_argument("--hyperadam-lr", type=_positive_float, default=0.005)
    demo.add_argument("--adam-lr", type=_positive_float, default=ADAM_LR)
    demo.add_argument("--out", default="demo.png", help="loss-curve PNG ('' for none)")


def _add_meta_train(sub) -> None:
    from hyperadam_optax.meta import ESTIMATORS, META_LOSSES, VALIDATION_METRICS
    from hyperadam_optax.optimizers.registry import OPTIMIZERS, names
    from hyperadam_optax.tasks.registry import ENSEMBLES

    mt = sub.add_parser("meta-train", help="meta-train a learned optimizer (truncated BPTT)")
    mt.add_argument("--optimizer", default="hyperadam", help=", ".join(names()))
    mt.add_argument("--task", default=None,
                    help="a task of the registry: mnist-mlp-rs (HyperAdam's and RNNprop's "
                         "problem), mnist-mlp-dm (DM's), mnist-mlp, mnist-mlp-mix (activation "
                         "drawn per task), quadratic, or any evaluation task; or a task "
                         "ensemble, one family drawn per meta-step ("
                         f"{', '.join(ENSEMBLES)}), or tasks separated by commas; "
                         "default: the optimizer's paper's problem")
    mt.add_argument("--init", default="paper", choices=sorted({i for spec in OPTIMIZERS.values()
                                                               for i in spec.inits}),
                    help="initial meta-parameters: the authors' init, or one of the "
                         "optimizer's own (its spec's inits, e.g. HyperAdam's Adam warm start)")
    mt.add_argument("--num-tasks", type=_positive_int, default=None,
                    help="tbptt, full: B, tasks per meta-step (default 8)")
    mt.add_argument("--task-chunk", type=_positive_int, default=None,
                    help="tasks vmapped together, chunks run one after another (a divisor of "
                         "--num-tasks); default: 1 on one CPU device, else all. It is not part "
                         "of the run's identity: a run resumed with another chunk continues "
                         "equal up to float rounding, not bit-for-bit")
    mt.add_argument("--meta-steps", type=_positive_int, default=1000)
    mt.add_argument("--meta-lr", type=_positive_float, default=None,
                    help="outer Adam rate; default: the optimizer's paper's (1e-4; DM 1e-3)")
    mt.add_argument("--clip-norm", type=_positive_float, default=1.0,
                    help="global-norm clipping of the meta-gradient")
    mt.add_argument("--cosine-decay", action="store_true",
                    help="decay the meta learning rate by a cosine to a tenth over --meta-steps")
    mt.add_argument("--unroll", type=_positive_int, default=20)
    mt.add_argument("--trajectory", type=_positive_int, default=100)
    mt.add_argument("--min-trajectory", type=_positive_int, default=None,
                    help="draw each task's horizon log-uniformly from [MIN, --trajectory] "
                         "(default: every task runs --trajectory steps)")
    mt.add_argument("--meta-loss", choices=META_LOSSES, default=None,
                    help="default: the optimizer's paper's (HyperAdam mean, RNNprop last, DM sum)")
    mt.add_argument("--train-only", default=None, metavar="FIELDS",
                    type=_names,
                    help="comma-separated fields of the meta-parameters that train, whole or "
                         "a block (e.g. theta_q,b_q or theta_q[1:] or theta_h[:,1:20]); the "
                         "others keep their initial values (default: all)")
    mt.add_argument("--field-scale", default=None, metavar="FIELD=FACTOR,...", type=_names,
                    help="comma-separated fields or blocks with a factor (e.g. "
                         "theta_p=0.02,theta_u=0.02): their perturbations and meta-updates "
                         "are multiplied by it (default: all 1)")
    mt.add_argument("--normalize-task-gradients", action="store_true",
                    help="scale each task's meta-gradient to norm 1 before the mean over "
                         "tasks (tbptt, full): chaotic tasks cannot outvote the others")
    mt.add_argument("--second-order", action="store_true",
                    help="differentiate through the optimizee gradient too")
    mt.add_argument("--estimator", choices=ESTIMATORS, default="tbptt",
                    help="meta-gradient estimator: truncated BPTT (the authors'), full BPTT "
                         "(--unroll = --trajectory), antithetic ES over whole trajectories, or "
                         "persistent ES (PES) over truncations")
    mt.add_argument("--num-particles", type=_positive_int, default=None,
                    help="ES/PES: antithetic pairs per meta-step, each on its own task "
                         "(default 8)")
    mt.add_argument("--sigma", type=_positive_float, default=None,
                    help="ES/PES: standard deviation of the meta-parameter perturbations, at "
                         "most 1 (default 0.01)")
    mt.add_argument("--init-from", default=None, metavar="FILE",
                    help="start from these meta-parameters: a file of save_meta_params or a "
                         "meta-training checkpoint (ckpt_*.npz, best.npz)")
    mt.add_argument("--seed", type=_seed, default=0)
    mt.add_argument("--out-dir", default="runs/meta-train")
    mt.add_argument("--data-dir", default=None,
                    help="directory with full MNIST (mnist.npz or IDX files); default: embedded")
    mt.add_argument("--resume", action="store_true", help="continue the run in --out-dir")
    mt.add_argument("--checkpoint-every", type=_positive_int, default=100)
    mt.add_argument("--keep", type=_positive_int, default=3, help="last checkpoints kept")
    mt.add_argument("--validation-tasks", type=_positive_int, default=4,
                    help="fixed tasks per validation family")
    mt.add_argument("--validate-on", default=None,
                    help="families that score checkpoints instead of the training ones: "
                         "'selection' (the selection val-* families, in no training "
                         "ensemble; 'validation' says the same) or tasks separated by "
                         "commas, never a report family; several are scored as the mean log "
                         "of each one's score")
    mt.add_argument("--validation-metric", choices=VALIDATION_METRICS, default="mean",
                    help="checkpoint score on the validation tasks: mean loss over the "
                         "trajectory, or the final parameters' loss (the tables' protocol)")
    mt.add_argument("--no-progress", action="store_true")
    _add_processes(mt)
    for spec in OPTIMIZERS.values():  # each optimizer's own flags, from its spec
        group = mt.add_argument_group(f"{spec.name} options (--optimizer {spec.name} only)")
        for option in spec.options:
            group.add_argument(option.flag, dest=_option_dest(spec.name, option), default=None,
                               type=_argparse_type(option.parse), choices=option.choices,
                               metavar=option.metavar or (None if option.choices
                                                          else option.argument.upper()),
                               help=option.help)


def _add_processes(parser) -> None:
    group = parser.add_argument_group(
        "multi-process runs (jax.distributed; docs/distributed.md)",
        "the same command in every process; process 0 alone writes files")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="process 0's address, with --num-processes and --process-id")
    group.add_argument("--num-processes", type=_positive_int, default=None)
    group.add_argument("--process-id", type=int, default=None)
    group.add_argument("--distributed", choices=["auto"], default=None,
                       help="join the processes JAX detects (SLURM, TPU pod slice, Open MPI, "
                            "Kubernetes) instead of the three flags above")
    group.add_argument("--heartbeat-timeout", type=_positive_int, default=100, metavar="S",
                       help="the others stop with an error when a process has been silent "
                            "this many seconds (default 100)")


def _join_processes(args) -> None:
    """``jax.distributed.initialize`` when the command is asked to run across processes."""
    given = (args.coordinator, args.num_processes, args.process_id)
    if args.distributed is None and all(v is None for v in given):
        return
    from hyperadam_optax.meta.processes import join

    join(*given, auto=args.distributed == "auto",
         heartbeat_timeout_s=args.heartbeat_timeout)


def _option_dest(optimizer: str, option) -> str:
    return f"option:{optimizer}:{option.argument}"


def _optimizer_options(args) -> tuple[dict, dict]:
    """The optimizer-specific flags given, as ``(init_options, alias options)``; a flag of
    another optimizer than ``--optimizer`` is refused."""
    from hyperadam_optax.optimizers.registry import OPTIMIZERS, get_optimizer

    chosen = get_optimizer(args.optimizer).name
    found = {"init": {}, "alias": {}}
    for spec in OPTIMIZERS.values():
        for option in spec.options:
            value = getattr(args, _option_dest(spec.name, option))
            if value is None:
                continue
            if spec.name != chosen:
                raise ValueError(f"{option.flag} is an option of {spec.name}, not of "
                                 f"{chosen}; leave it out")
            found[option.of][option.argument] = value
    return found["init"], found["alias"]


def _add_evaluate(sub) -> None:
    ev = sub.add_parser("evaluate", help="the paper's evaluation protocol and tables")
    ev.add_argument("--suite", default="table1",
                    help="table1, table2, deep-mlp, cnn, long-horizon, generalisation, validation "
                         "(tasks of no paper and no training family) or all")
    ev.add_argument("--optimizers", default="sgd,momentum,adagrad,adadelta,rmsprop,adam",
                    help="comma-separated: a baseline (tuned) or baseline@rate; a learned "
                         "optimizer (pretrained), NAME:PATH.npz, or hyperadam:warm")
    ev.add_argument("--tasks", default=None,
                    help="comma-separated subset of the suite's tasks (default: all)")
    ev.add_argument("--runs", type=_positive_int, default=100)
    ev.add_argument("--steps", type=_positive_int, default=100)
    ev.add_argument("--tune-runs", type=_positive_int, default=10,
                    help="runs per learning rate when tuning a baseline (separate seeds)")
    ev.add_argument("--seed", type=_seed, default=0)
    ev.add_argument("--out-dir", default="runs/evaluation")
    ev.add_argument("--cache", default=None,
                    help="tuning cache (JSON); default: OUT_DIR/tuning_cache.json")
    ev.add_argument("--data-dir", default=None,
                    help="full MNIST (mnist.npz or IDX files): train split for training, test "
                         "split for the generalisation suite; default: embedded 4,000/1,000")
    ev.add_argument("--no-progress", action="store_true")
    _add_processes(ev)


def _add_compare(sub) -> None:
    cmp = sub.add_parser("compare", help="paired differences of one optimizer against one "
                                         "baseline, from evaluate's JSON files")
    cmp.add_argument("evaluations", nargs="+", help="{suite}.json files written by evaluate")
    cmp.add_argument("--optimizer", default="hyperadam")
    cmp.add_argument("--baseline", default="adam")


def _evaluate(args) -> None:
    import time

    from hyperadam_optax.evaluation import (
        SUITES,
        check_request,
        evaluate_suite,
        markdown_table,
        save_evaluation,
    )
    from hyperadam_optax.io import ensure_writable_dir
    from hyperadam_optax.tasks.data import mnist_data

    suites = list(SUITES) if args.suite == "all" else [args.suite]
    for suite in suites:
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; expected one of {tuple(SUITES)} or 'all'")
    tasks = None if args.tasks is None else args.tasks.split(",")
    for suite in suites:  # every refusal before the output directory is made
        check_request(suite, args.optimizers.split(","), tasks)
    data = test_data = None
    if args.data_dir:
        train, test = mnist_data(args.data_dir, "train")[0], mnist_data(args.data_dir, "test")[0]
        data, test_data = (train.x, train.y), (test.x, test.y)
    import jax

    from hyperadam_optax.meta.processes import is_writer

    if jax.process_count() > 1:  # the runs are split over every process's devices
        for flag, value in (("--runs", args.runs), ("--tune-runs", args.tune_runs)):
            if value % jax.device_count():
                raise ValueError(f"{flag} ({value}) must be a multiple of the number of "
                                 f"devices ({jax.device_count()}) of the processes")
    writer = is_writer()  # process 0 alone writes (and prints)
    if writer:
        ensure_writable_dir(args.out_dir)  # before any computing: results must have a home
    cache = args.cache or f"{args.out_dir}/tuning_cache.json"
    for suite in suites:
        t0 = time.perf_counter()
        evaluated = evaluate_suite(suite, args.optimizers.split(","), runs=args.runs,
                                   steps=args.steps, seed=args.seed, tune_runs=args.tune_runs,
                                   cache_path=cache, data=data, test_data=test_data,
                                   progress=not args.no_progress and writer, tasks=tasks)
        if not writer:
            continue
        print(f"## {suite}: {args.runs} runs x {args.steps} steps, seed {args.seed}\n")
        print(markdown_table(evaluated))
        paths = save_evaluation(evaluated, args.out_dir, suite)
        print(f"\nwall time {time.perf_counter() - t0:.1f} s; wrote {', '.join(paths)}\n")


def _compare(args) -> None:
    from hyperadam_optax.evaluation import comparison_table, load_results, paired_comparison

    rows = {path: paired_comparison(load_results(path), args.optimizer, args.baseline)
            for path in args.evaluations}
    print(f"{args.optimizer} minus {args.baseline}, paired over runs (ahead: more than 2 s.e. "
          "lower)\n")
    print(comparison_table(rows))


def _meta_train(args, argv) -> None:
    import shlex

    from hyperadam_optax.meta import (
        MetaTrainConfig,
        OptimizerChoice,
        RunOptions,
        TaskChoice,
        meta_train,
    )
    from hyperadam_optax.meta.config import ESTIMATOR_OPTIONS

    given = {"num_tasks": args.num_tasks, "task_chunk": args.task_chunk,
             "num_particles": args.num_particles, "sigma": args.sigma,
             "second_order": args.second_order or None,
             "normalize_task_gradients": args.normalize_task_gradients or None}
    for name, value in given.items():
        readers, flag = ESTIMATOR_OPTIONS[name]
        if value is not None and args.estimator not in readers:
            raise ValueError(f"{flag} does not apply to --estimator {args.estimator} (only "
                             f"{' and '.join(readers)} read it); leave it out")
    config = MetaTrainConfig(unroll=args.unroll, trajectory=args.trajectory,
                             meta_loss=args.meta_loss, min_trajectory=args.min_trajectory,
                             meta_lr=args.meta_lr, clip_norm=args.clip_norm,
                             cosine_decay_steps=args.meta_steps if args.cosine_decay else None,
                             estimator=args.estimator, trainable=args.train_only,
                             field_scales=args.field_scale,
                             **{k: v for k, v in given.items() if v is not None})
    init_options, options = _optimizer_options(args)
    optimizer = OptimizerChoice(args.optimizer, init=args.init, init_options=init_options,
                                options=options, init_from=args.init_from)
    tasks = TaskChoice(args.task, validate_on=args.validate_on,
                       validation_tasks=args.validation_tasks,
                       validation_metric=args.validation_metric, data_dir=args.data_dir)
    run = RunOptions(out_dir=args.out_dir, meta_steps=args.meta_steps, seed=args.seed,
                     resume=args.resume, checkpoint_every=args.checkpoint_every, keep=args.keep,
                     progress=not args.no_progress,
                     command="hyperadam-optax " + " ".join(shlex.quote(a) for a in argv))
    enable_compilation_cache()
    meta_train(optimizer, tasks, config, run)


def enable_compilation_cache(path: str | None = None) -> str:
    """Turn on JAX's persistent compilation cache (``path``, else ``$HYPERADAM_OPTAX_CACHE``,
    else ``~/.cache/hyperadam_optax/jax``), so a resumed ``meta-train`` (each ensemble
    family a program of its own) does not compile again; the command's choice, made for
    its process only. Returns the directory."""
    import os

    import jax

    path = path or os.environ.get("HYPERADAM_OPTAX_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "hyperadam_optax", "jax")
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path


#: XLA:CPU's multi-threaded Eigen pool has been seen to wedge for good on large vmapped
#: programs (all workers idle, the result never ready: twice here in ``evaluate`` while a
#: meta-training process shared the CPU; also reported in PyAutoLabs/PyAutoFit#1530, where
#: this flag removed it). The evaluation's vmapped runs are such programs. (The wedge seen
#: here in 2026-12 was another one that this flag does not prevent: two batched LAPACK QRs
#: in one program, the random quadratics' rotations; gdb showed both pool threads blocked in
#: ``lapack_sgeqrf_ffi``'s ``ParallelBatchMap``. Those tasks no longer call LAPACK:
#: :func:`~hyperadam_optax.tasks.quadratic.householder_q`.)
_EVALUATE_XLA_FLAG = "--xla_cpu_multi_thread_eigen=false"


def _single_threaded_eigen() -> None:
    """Add :data:`_EVALUATE_XLA_FLAG` to ``XLA_FLAGS`` unless the user set that flag. Takes
    effect only before JAX's backend starts, so only :func:`run` (a process of its own) calls
    it; ``import hyperadam_optax`` does not start the backend."""
    import os

    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_EVALUATE_XLA_FLAG}".strip()


def run(argv=None) -> int:
    """The ``hyperadam-optax`` command and ``python -m hyperadam_optax.cli``: :func:`main` in
    a process of its own, where XLA flags can still be set before JAX starts."""
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["evaluate"]:
        _single_threaded_eigen()
    return main(argv)


def main(argv=None) -> int:
    """The command line, callable in a running process (tests, notebooks)."""
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from hyperadam_optax.cli.demo import run_demo

        run_demo(steps=args.steps, runs=args.runs, seed=args.seed, out=args.out or None,
                 hyperadam_lr=args.hyperadam_lr, adam_lr=args.adam_lr)
        return 0
    commands = {"evaluate": _evaluate, "meta-train": lambda a: _meta_train(a, argv),
                "compare": _compare}
    from hyperadam_optax.meta import NonFiniteMetaStepsError
    from hyperadam_optax.meta.processes import WriterRefusedError

    try:
        if hasattr(args, "coordinator"):
            _join_processes(args)
        commands[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:  # refused before any work
        parser.exit(2, f"hyperadam-optax {args.command}: error: {e}\n")
    except (NonFiniteMetaStepsError, WriterRefusedError) as e:  # stopped itself / with process 0
        parser.exit(1, f"hyperadam-optax {args.command}: error: {e}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
