"""README.md and docs/: the Python examples run, every CLI command in them parses, and the
README stays a user's page (at most 15 KB, the two-command quickstart first)."""

import pathlib
import re
import shlex

import jax.numpy as jnp
import numpy as np
import pytest

from hyperadam_optax.cli import build_parser

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(path, lang):
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_examples_run():
    namespace = {}
    for code in _blocks(README, "python"):
        exec(compile(code, str(README), "exec"), namespace)
    # The flax example trains.
    x = jnp.asarray(np.random.default_rng(0).random((32, 64)), jnp.float32)
    y = jnp.arange(32) % 10
    losses = [float(namespace["train_step"](namespace["model"], namespace["optimizer"], x, y))
              for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


def _cli_commands(path):
    text = path.read_text()
    found = []
    for code in _blocks(path, "bash"):
        found += [line for line in code.replace("\\\n", " ").splitlines()
                  if line.strip().startswith("hyperadam-optax ")]
    found += re.findall(r"`(hyperadam-optax [^`]+)`", text)
    return found


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_documented_commands_parse(path):
    """Every ``hyperadam-optax ...`` command written in README or docs/ is accepted by the
    CLI's parser as written (a renamed or removed option fails here)."""
    parser = build_parser()
    for command in _cli_commands(path):
        argv = shlex.split(command.split("#")[0])[1:]
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            raise AssertionError(f"{path.name}: `{command}` does not parse") from e


def test_readme_is_a_users_page():
    text = README.read_text()
    assert len(text.encode()) <= 15_000
    first = _blocks(README, "bash")[:2]
    assert text.index("## Quickstart") < text.index("```bash")
    assert first[0].strip().endswith("hyperadam-optax demo")
    assert first[1].strip().endswith("python -m pytest")
    for link in re.findall(r"\]\(((?:docs|notebooks)/[^)#]+)\)", text):
        assert (ROOT / link).exists(), link
