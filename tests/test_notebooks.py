"""The research notebooks: stored with outputs made from their current code, and runnable.

Stored outputs come from ``python notebooks/execute.py`` (full settings); the run test executes
a copy top to bottom with small settings (HYPERADAM_OPTAX_NOTEBOOK_SMALL=1).
"""

import importlib.util
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _execute_module():
    spec = importlib.util.spec_from_file_location("notebooks_execute", ROOT / "notebooks" / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_are_listed_in_readme():
    readme = (ROOT / "README.md").read_text()
    assert NOTEBOOKS
    assert "notebooks/execute.py" in readme
    for path in NOTEBOOKS:
        assert path.name in readme, f"README does not list {path.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_notebook_has_outputs_of_its_current_code(path):
    execute = _execute_module()
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    stamp = nb.metadata.get(execute.STAMP, {}).get("code_sha256")
    rerun = f"rerun `python notebooks/execute.py {path.stem}`"
    assert stamp == execute.code_sha256(nb), f"{path.name}: outputs older than its code cells; {rerun}"
    assert all(c.get("execution_count") for c in code), f"{path.name}: a code cell never ran; {rerun}"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"], path.name
    shown = [o for o in outputs if o.get("output_type") == "stream"
             or "text/markdown" in o.get("data", {})]
    assert shown, f"{path.name}: no printed output or table"
    if "plt.show()" in "".join(c.source for c in code):
        assert [o for o in outputs if "image/png" in o.get("data", {})], f"{path.name}: no figure stored"


def test_stamp_changes_with_code_not_markdown():
    execute = _execute_module()
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    before = execute.code_sha256(nb)
    next(c for c in nb.cells if c.cell_type == "markdown").source += " more prose"
    assert execute.code_sha256(nb) == before
    next(c for c in nb.cells if c.cell_type == "code").source += "\nx = 1"
    assert execute.code_sha256(nb) != before


# The quickstart in the default run; the longer two in the slow one (CI runs both).
@pytest.mark.parametrize("path", [
    p if p.name.startswith("01") else pytest.param(p, marks=pytest.mark.slow) for p in NOTEBOOKS
], ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERADAM_OPTAX_NOTEBOOK_SMALL", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
