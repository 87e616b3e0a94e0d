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
