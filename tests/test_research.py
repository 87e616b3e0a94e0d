"""``research/`` is outside the package, but its probe scripts must keep working against it:
each imports (so it names no removed module or function) and answers ``--help``."""

import importlib.util
import pathlib

import pytest

RESEARCH = pathlib.Path(__file__).resolve().parents[1] / "research"
SCRIPTS = sorted(RESEARCH.glob("*.py"))


def test_the_research_folder_lists_every_script():
    readme = (RESEARCH / "README.md").read_text()
    assert SCRIPTS
    missing = [p.name for p in SCRIPTS if f"`{p.name}`" not in readme]
    assert not missing, f"research/README.md does not list {missing}"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_a_research_script_imports_and_answers_help(path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(RESEARCH))  # as when run: scripts import each other
    spec = importlib.util.spec_from_file_location(f"research_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its imports of the package resolve
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out
