"""Shared by the meta-training run tests: the CLI in a process or in this one, tiny runs."""

import json
import os
import subprocess
import sys

import pytest

from hyperadam_optax import meta as mt

CLI = [sys.executable, "-m", "hyperadam_optax.cli"]


QUICK = ["meta-train", "--task", "quadratic", "--num-tasks", "2", "--unroll", "5",
         "--trajectory", "10", "--meta-lr", "0.01", "--validation-tasks", "2", "--no-progress"]
QUICK_PES = [*QUICK[:3], *QUICK[5:], "--estimator", "pes"]  # PES has particles, not --num-tasks


def cli(*args, **kw):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, **kw)


def cli_error(capsys, *args) -> str:
    """The CLI run in this process on input it must refuse before any work: exits with status
    2 (argparse's, or a clear error, never a traceback); returns its stderr."""
    from hyperadam_optax.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2, stderr
    return stderr


def steps_logged(path):
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max([json.loads(line).get("step", 0) for line in f if line.strip()] or [0])

#: QUICK at a tenth of its meta-rate: finite for 4,000 meta-steps and more (at 0.01 a run
#: diverges, and stops itself, after about a thousand: measured), so it is still running
#: when killed, however fast the machine.
LONG = [a if a != "0.01" else "0.001" for a in QUICK]


def quick_run(out, steps, *, init="paper", normalization=None, init_from=None, log=None,
               **run):
    config = mt.MetaTrainConfig(num_tasks=2, unroll=5, trajectory=10, meta_lr=0.01)
    optimizer = mt.OptimizerChoice("hyperadam", init=init, init_from=init_from,
                                   options={"normalization": normalization})
    return mt.meta_train(optimizer, mt.TaskChoice("quadratic", validation_tasks=2), config,
                         mt.RunOptions(out_dir=str(out), meta_steps=steps, progress=False, **run),
                         log=log or (lambda *_: None))
