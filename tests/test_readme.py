"""The README's Python examples run as written."""

import pathlib
import re

import jax.numpy as jnp
import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_examples_run():
    blocks = _python_blocks()
    assert len(blocks) == 2
    namespace = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), namespace)
    x = jnp.asarray(np.random.default_rng(0).random((32, 64)), jnp.float32)
    y = jnp.arange(32) % 10
    losses = [float(namespace["train_step"](namespace["model"], namespace["optimizer"], x, y))
              for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
