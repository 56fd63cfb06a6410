"""Build the tutorial notebooks from their sources, execute them, and save them with their outputs.

The sources are `notebooks/src/NN_name.py` in the "percent" format: `# %%` starts a code cell and
`# %% [markdown]` a markdown cell whose lines are comments. Edit a source, then run

    python tools/make_notebooks.py            # all notebooks
    python tools/make_notebooks.py 02 04      # the ones whose names start with these

Each notebook is executed top to bottom on a fresh `python3` kernel with `notebooks/` as its working
directory, and saved as `notebooks/NN_name.ipynb` with its outputs (plotly figures included), so a
reader sees the results without running anything. `tests/test_notebooks.py` executes the saved
notebooks again and checks that they match their sources.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = NOTEBOOKS / "src"
KERNEL_NAME = "python3"
CELL_TIMEOUT_S = 600


def parse_percent(text: str) -> list[tuple[str, str]]:
    """Split percent-format source into `(cell_type, source)` pairs, in order."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            kind = "markdown" if "[markdown]" in line else "code"
            cells.append((kind, []))
            continue
        if not cells:
            continue  # text before the first marker (a module docstring, say) is not part of the notebook
        kind, lines = cells[-1]
        if kind == "markdown":
            line = line[2:] if line.startswith("# ") else line.removeprefix("#")
        lines.append(line)
    out = []
    for kind, lines in cells:
        body = "\n".join(lines).strip("\n")
        if body.strip():
            out.append((kind, body))
    return out


def build_notebook(source: Path) -> nbformat.NotebookNode:
    """An unexecuted notebook from one percent-format source file."""
    nb = nbformat.v4.new_notebook()
    for i, (kind, body) in enumerate(parse_percent(source.read_text())):
        cell = nbformat.v4.new_markdown_cell(body) if kind == "markdown" else nbformat.v4.new_code_cell(body)
        cell["id"] = f"cell-{i:02d}"  # stable ids keep regenerated notebooks' diffs small
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path = NOTEBOOKS) -> nbformat.NotebookNode:
    """Run every cell in order on a fresh kernel; raises `nbclient.exceptions.CellExecutionError` on error."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=KERNEL_NAME,
        record_timing=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="build only notebooks whose names start with these")
    parser.add_argument("--no-execute", action="store_true", help="write the notebooks without outputs")
    args = parser.parse_args(argv)
    # The committed notebooks show the full runs; WORKBENCH_FAST is for the test suite only.
    os.environ.pop("WORKBENCH_FAST", None)
    # One intra-op thread for the kernels: the models are tiny, and on a shared machine threads that wait for
    # each other make every kernel several times slower. Timings in the notebooks state their thread count.
    os.environ["OMP_NUM_THREADS"] = "1"
    sources = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    if args.only:
        sources = [s for s in sources if any(s.stem.startswith(p) for p in args.only)]
    for source in sources:
        nb = build_notebook(source)
        start = time.perf_counter()
        if not args.no_execute:
            execute(nb)
        target = NOTEBOOKS / f"{source.stem}.ipynb"
        nbformat.validate(nb)
        tmp = target.with_suffix(".ipynb.tmp")
        nbformat.write(nb, str(tmp))
        os.replace(tmp, target)
        size_mb = target.stat().st_size / 1e6
        print(
            f"{target.relative_to(ROOT)}: {time.perf_counter() - start:.1f} s, {size_mb:.2f} MB",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
