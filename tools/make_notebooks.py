"""Build the tutorial notebooks from their sources, execute them, and save them with their outputs.

The sources are `notebooks/src/NN_name.py` in the "percent" format: `# %%` starts a code cell and
`# %% [markdown]` a markdown cell whose lines are comments. Edit a source, then run

    python tools/make_notebooks.py            # all notebooks
    python tools/make_notebooks.py 02 04      # the ones whose names start with these

Each notebook is executed top to bottom on a fresh `python3` kernel with `notebooks/` as its working
directory, and saved as `notebooks/NN_name.ipynb` with its outputs, so a reader sees the results without
running anything. Every plotly figure is saved twice: as plotly JSON (JupyterLab and VS Code draw it
interactively) and as a PNG rendered from that JSON by kaleido in a headless Chrome (GitHub's preview, the
documentation site and every viewer without JavaScript show it). The plotly.js bundle a kernel may have
inlined is dropped, which keeps each notebook small; run locally, the figures are interactive as usual.
Kaleido finds Chrome or Chromium on the PATH, or at `$BROWSER_PATH` (default here: /usr/bin/chromium).
`tests/test_notebooks.py` executes the saved notebooks again and checks that they match their sources,
stay under 1.5 MB and hold a PNG of every figure.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
import warnings
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = NOTEBOOKS / "src"
KERNEL_NAME = "python3"
CELL_TIMEOUT_S = 600
PLOTLY_MIME = "application/vnd.plotly.v1+json"
SYSTEM_CHROMIUM = "/usr/bin/chromium"
# 1.5x the figure's own size: sharp on a high-density screen, about 40-100 kB a figure.
PNG_SCALE = 1.5


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


def _is_plotlyjs_loader(output: nbformat.NotebookNode) -> bool:
    """The output plotly's `notebook` renderer adds once to load plotly.js (about 4.8 MB of script)."""
    html = output.get("data", {}).get("text/html", "")
    return PLOTLY_MIME not in output.get("data", {}) and "window.PlotlyConfig" in html


def _is_html_figure(output: nbformat.NotebookNode) -> bool:
    """A figure drawn by a script in HTML and nothing else: only a JavaScript viewer shows it."""
    data = output.get("data", {})
    return (
        PLOTLY_MIME not in data and "image/png" not in data and "Plotly.newPlot" in data.get("text/html", "")
    )


def _figure_outputs(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if PLOTLY_MIME in o.get("data", {})
    ]


def static_figures(nb: nbformat.NotebookNode) -> int:
    """Give every plotly figure in `nb` a PNG of itself and drop what only a JavaScript viewer can use.

    Each output holding plotly JSON keeps it and gains `image/png`, rendered from that JSON by kaleido;
    its `text/html` (a script that needs plotly.js) is removed, and so is the output that loads plotly.js.
    Changes `nb` in place; returns the number of figures.
    """
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not _is_plotlyjs_loader(o)]
    figures = _figure_outputs(nb)
    html_only = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if _is_html_figure(o)]
    if html_only:
        raise RuntimeError(
            f"{len(html_only)} figure(s) saved as HTML only (no plotly JSON to draw a PNG from): leave "
            "plotly's renderer at its default or include 'plotly_mimetype' in it"
        )
    if not figures:
        return 0
    import kaleido
    import plotly.io as pio

    if "BROWSER_PATH" not in os.environ and os.path.exists(SYSTEM_CHROMIUM):
        os.environ["BROWSER_PATH"] = SYSTEM_CHROMIUM  # choreographer's setting; else it searches the PATH
    # One browser for all figures (a fresh one per figure costs seconds each); MathJax off: it would be
    # fetched from a CDN, and no figure here uses LaTeX.
    kaleido.start_sync_server(n=1, mathjax=False, silence_warnings=True)
    try:
        for output in figures:
            with warnings.catch_warnings():  # plotly passes options the running server already has
                warnings.filterwarnings("ignore", message="The kopts argument is ignored")
                png = pio.to_image(output.data[PLOTLY_MIME], format="png", scale=PNG_SCALE)
            output.data.pop("text/html", None)
            output.data["image/png"] = base64.b64encode(png).decode("ascii")
            output.data.setdefault("text/plain", "<plotly figure: an image here, interactive when run>")
    finally:
        kaleido.stop_sync_server(silence_warnings=True)
    return len(figures)


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
        figures = 0
        if not args.no_execute:
            execute(nb)
            figures = static_figures(nb)
        target = NOTEBOOKS / f"{source.stem}.ipynb"
        nbformat.validate(nb)
        tmp = target.with_suffix(".ipynb.tmp")
        nbformat.write(nb, str(tmp))
        os.replace(tmp, target)
        size_mb = target.stat().st_size / 1e6
        print(
            f"{target.relative_to(ROOT)}: {time.perf_counter() - start:.1f} s, {size_mb:.2f} MB, "
            f"{figures} figures",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
