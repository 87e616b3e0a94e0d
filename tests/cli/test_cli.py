"""The quickstart demo and the command line."""

import numpy as np
import pytest

from hyperadam_optax import cli
from hyperadam_optax.cli.demo import run_demo


def test_demo_trains_and_plots(tmp_path, capsys):
    out = tmp_path / "curves.png"
    curves = run_demo(steps=30, runs=2, seed=1, out=str(out))
    assert out.stat().st_size > 10_000
    assert len(curves) == 2
    for c in curves.values():
        assert c.shape == (2, 30)
        assert c[:, -5:].mean() < c[:, :5].mean()  # every optimizer learns
    adam = next(c for label, c in curves.items() if label.startswith("Adam, lr 0.03125"))
    assert adam[:, -5:].mean() < 1.5
    printed = capsys.readouterr().out
    assert "HyperAdam (pretrained)" in printed and "| optimizer |" in printed
    assert "shipped meta-parameters: meta-step" in printed


@pytest.mark.slow  # the same demo as above through the CLI
def test_cli_demo(tmp_path, capsys):
    assert cli.main(["demo", "--steps", "12", "--runs", "1", "--out", ""]) == 0
    assert "step 12" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["demo", "--steps", "0"], ["demo", "--adam-lr", "-1"],
                                  ["nonsense"]])
def test_cli_rejects_bad_input(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_demo_table_flags_diverged_runs():
    from hyperadam_optax.cli.demo import loss_table

    steps = np.arange(1, 31, dtype=np.float64)
    curves = {"steady": np.stack([2.0 / steps] * 3), "blows up": np.stack([0.1 * steps] * 3)}
    table = loss_table(curves)
    assert "DIVERGED" in table and "blows up: 3 of 3 runs" in table and "steady:" not in table


def test_evaluate_runs_xla_cpu_eigen_single_threaded_unless_the_user_chose():
    """The guard against XLA:CPU's wedged Eigen pool (cli/main.py) is set before JAX starts,
    and a user's own setting of the flag is kept."""
    import os
    import subprocess
    import sys

    code = ("from hyperadam_optax.cli.main import _single_threaded_eigen; "
            "_single_threaded_eigen(); import os; print(os.environ['XLA_FLAGS'])")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "--xla_cpu_multi_thread_eigen=false", out.stderr
    env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=true"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "--xla_cpu_multi_thread_eigen=true", out.stderr
