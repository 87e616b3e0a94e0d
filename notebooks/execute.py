"""Run the notebooks top to bottom at their full settings and store them with their outputs.

    python notebooks/execute.py                  # every notebook in this folder
    python notebooks/execute.py 01_quickstart    # some of them

Each notebook runs in a scratch directory, then is written back in place with its outputs
(tables, figures) and a stamp in its metadata, ``hyperadam_optax.code_sha256``: the SHA-256
of its code cells' sources. ``tests/test_notebooks.py`` fails when a stored notebook lacks
outputs or its stamp does not match its code cells (the code changed after the outputs were
made): rerun this script then.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys
import tempfile

import nbclient
import nbformat

HERE = pathlib.Path(__file__).resolve().parent
STAMP = "hyperadam_optax"


def code_sha256(nb) -> str:
    """SHA-256 of the code cells' sources, in order (markdown edits do not invalidate outputs)."""
    sources = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def execute(path: pathlib.Path, timeout: int = 1800) -> None:
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="hyperadam-notebook-") as scratch:
        nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": scratch}}).execute()
    nb.metadata[STAMP] = {"code_sha256": code_sha256(nb)}
    nbformat.write(nb, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook stems (default: all)")
    args = parser.parse_args(argv)
    paths = sorted(HERE.glob("*.ipynb"))
    if args.names:
        by_stem = {p.stem: p for p in paths}
        unknown = [n for n in args.names if n.removesuffix(".ipynb") not in by_stem]
        if unknown:
            parser.error(f"no notebook {unknown}; expected some of {sorted(by_stem)}")
        paths = [by_stem[n.removesuffix(".ipynb")] for n in args.names]
    for path in paths:
        print(f"running {path.name} ...", flush=True)
        execute(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
