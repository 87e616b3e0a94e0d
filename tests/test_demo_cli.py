"""The quickstart demo, the CLI and the embedded data."""

import numpy as np
import pytest

from hyperadam_optax import cli
from hyperadam_optax.data import load_digits, load_mnist_5k
from hyperadam_optax.demo import run_demo


def test_embedded_mnist_is_real_mnist():
    d = load_mnist_5k()
    assert d.x.shape == (5000, 784) and d.x.dtype == np.float32
    assert 0.0 == d.x.min() and d.x.max() == 1.0
    assert sorted(np.unique(d.y)) == list(range(10))
    # MNIST digits: about 19% of pixels are ink, the border is blank.
    assert 0.1 < float((d.x > 0.5).mean()) < 0.3
    assert float(d.x.reshape(-1, 28, 28)[:, 0, :].max()) == 0.0


def test_digits():
    d = load_digits()
    assert d.x.shape == (1797, 64) and d.x.max() == 1.0


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
