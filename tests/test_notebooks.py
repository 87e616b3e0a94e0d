"""The research notebooks run top to bottom (small settings: HYPERADAM_OPTAX_NOTEBOOK_SMALL=1)."""

import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_listed_in_readme_without_committed_outputs():
    readme = (ROOT / "README.md").read_text()
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        assert path.name in readme, f"README does not list {path.name}"
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name


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
