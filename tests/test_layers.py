"""The package's layers: a module imports only from its own layer and the ones below it, so
there is no import circle and the optimizer transforms do no file IO."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "hyperadam_optax"
#: Bottom to top (docs/DESIGN.md).
LAYERS = ["optimizers", "io", "tasks", "meta", "evaluation", "cli"]
MODULES = sorted(p for layer in LAYERS for p in (PACKAGE / layer).rglob("*.py"))


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


def _layer(path) -> str:
    return path.relative_to(PACKAGE).parts[0]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down(path):
    layer = LAYERS.index(_layer(path))
    above = {name for name in _imported_layers(path) if LAYERS.index(name) > layer}
    assert not above, f"{path.relative_to(PACKAGE)} imports the higher layers {above}"


def test_subpackages_are_all_checked():
    assert any(p.parent.name == "estimators" for p in MODULES)
    on_disk = {p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE}
    assert on_disk == set(MODULES), on_disk ^ set(MODULES)


def _third_party_imports(path, *, top_level: bool) -> set[str]:
    """Top-level names of the modules ``path`` imports outside the standard library and the
    package, at module level (``top_level``) or inside functions (not ``top_level``)."""
    import sys

    tree = ast.parse(path.read_text())
    module_level = {id(n) for n in tree.body}
    found = set()
    for node in ast.walk(tree):
        if (id(node) in module_level) != top_level:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names}
    return {n for n in found if n not in sys.stdlib_module_names and n != "hyperadam_optax"}


def test_runtime_dependencies_are_what_the_package_imports():
    """pyproject's dependencies are what the package imports at module level (jaxlib comes
    with jax); what it imports lazily, inside a function, is an extra's."""
    import re

    import tomllib

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    names = lambda specs: {re.split(r"[<>=!\[ ;]", s)[0].lower() for s in specs}
    dependencies = names(project["dependencies"])
    extras = set().union(*(names(v) for v in project["optional-dependencies"].values()))
    files = [*PACKAGE.rglob("*.py")]
    eager = set().union(*(_third_party_imports(p, top_level=True) for p in files))
    lazy = set().union(*(_third_party_imports(p, top_level=False) for p in files))
    import_names = {"scikit-learn": "sklearn"}
    assert dependencies - {"jaxlib"} == eager, (dependencies, eager)
    assert lazy - eager <= {import_names.get(e, e) for e in extras}, (lazy, extras)


def test_optimizer_modules_do_no_file_io():
    for path in (PACKAGE / "optimizers").rglob("*.py"):
        text = path.read_text()
        for word in ("open(", "np.load(", "resources.", "load_pretrained"):
            assert word not in text, f"optimizers/{path.name} uses {word}"
