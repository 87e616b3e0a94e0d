"""The package's layers: a module imports only from its own layer and the ones below it, so
there is no import circle and the optimizer transforms do no file IO."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "hyperadam_optax"
#: Bottom to top (docs/DESIGN.md).
LAYERS = ["optimizers", "io", "tasks", "meta", "evaluation", "cli"]
MODULES = sorted(p for layer in LAYERS for p in (PACKAGE / layer).glob("*.py"))


def _imported_layers(path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "hyperadam_optax" and len(parts) > 1 and parts[1] in LAYERS:
                yield parts[1]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_imports_only_go_down(path):
    layer = LAYERS.index(path.parent.name)
    above = {name for name in _imported_layers(path) if LAYERS.index(name) > layer}
    assert not above, f"{path.parent.name}/{path.name} imports the higher layers {above}"


def test_optimizer_modules_do_no_file_io():
    for path in (PACKAGE / "optimizers").glob("*.py"):
        text = path.read_text()
        for word in ("open(", "np.load(", "resources.", "load_pretrained"):
            assert word not in text, f"optimizers/{path.name} uses {word}"
