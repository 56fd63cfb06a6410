"""The tutorial notebooks run top to bottom on a fresh kernel, and the committed copies are current.

Each notebook is executed with nbclient on a new `python3` kernel, with `notebooks/` as its working
directory, the repository root on `PYTHONPATH` and one intra-op thread; any cell error fails the test.
`WORKBENCH_FAST=1` shortens the notebooks' timing loops, sweeps, sample caps and fine-tuning (each notebook
reads it in its first cell).

The committed notebooks must read where people read them: under 1.5 MB each, no plotly.js bundle, and a PNG
of every figure (GitHub's preview and the documentation site run no JavaScript).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
EXPECTED = [
    "01_quickstart",
    "02_sensitivity",
    "03_importance",
    "04_prune_quantize_distill",
    "05_beyond_pruning",
    "06_taylor_iterative",
    "07_label_free",
]
PLOTLY_MIME = "application/vnd.plotly.v1+json"
MAX_NOTEBOOK_BYTES = 1_500_000
COMMITTED = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))  # a new tutorial is checked too
# plotly's default figure size where a layout sets none (plotly.io.defaults.default_width/height)
DEFAULT_SIZE = (700, 500)


def _maker():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _notebook(name: str) -> Path:
    return NOTEBOOK_DIR / f"{name}.ipynb"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Environment for the kernels: repo root importable, fast mode, one thread, a `python3` kernelspec.

    pip's ipykernel ships the `python3` kernelspec; if it is missing (an unusual install), one is written
    to a temporary Jupyter path for this test only, never into the user's environment.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    saved = {
        k: os.environ.get(k) for k in ("PYTHONPATH", "WORKBENCH_FAST", "JUPYTER_PATH", "OMP_NUM_THREADS")
    }
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), saved["PYTHONPATH"]]))
    os.environ["WORKBENCH_FAST"] = "1"
    # The models are tiny: a second intra-op thread buys little, and on a busy machine threads that wait
    # for each other make the kernels several times slower.
    os.environ["OMP_NUM_THREADS"] = "1"
    if "python3" not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        prefix = tmp_path_factory.mktemp("jupyter")
        install(prefix=str(prefix), kernel_name="python3")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            filter(None, [str(prefix / "share" / "jupyter"), saved["JUPYTER_PATH"]])
        )
    assert "python3" in KernelSpecManager().find_kernel_specs()
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_every_tutorial_is_present():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_notebook_matches_its_source(name):
    """The .ipynb holds exactly the cells of notebooks/src/<name>.py (run tools/make_notebooks.py)."""
    committed = nbformat.read(_notebook(name), as_version=4)
    built = _maker().build_notebook(NOTEBOOK_DIR / "src" / f"{name}.py")
    current = [(c.cell_type, c.source) for c in committed.cells] == [
        (c.cell_type, c.source) for c in built.cells
    ]
    assert current, f"notebooks/{name}.ipynb is out of date: run python tools/make_notebooks.py {name[:2]}"


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_notebook_holds_its_outputs(name):
    """Saved after a clean run: every code cell ran in order, no errors, plotly figures embedded once."""
    path = _notebook(name)
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o.data[PLOTLY_MIME] for o in outputs if PLOTLY_MIME in o.get("data", {})]
    assert figures, "no plotly figure saved"
    assert all(fig["data"] for fig in figures), "a saved figure has no traces"
    json.loads(path.read_text())  # valid JSON a code host can render


def _png_size(b64: str) -> tuple[int, int]:
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 8, "a blank image"
    return image.size


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_notebook_reads_without_javascript(name):
    """Under 1.5 MB; every figure has a PNG of itself; nothing needs plotly.js or a network to show."""
    path = _notebook(name)
    size = path.stat().st_size
    assert size < MAX_NOTEBOOK_BYTES, f"notebooks/{name}.ipynb is {size / 1e6:.2f} MB (limit 1.5 MB)"
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    for output in outputs:
        data = output.get("data", {})
        html = data.get("text/html", "")
        assert "window.PlotlyConfig" not in html and "plotly.js v" not in html, "plotly.js is inlined"
        assert "<script src=" not in html, "an output loads a script from elsewhere"
        if PLOTLY_MIME in data or "Plotly.newPlot" in html:
            assert "image/png" in data, f"a figure in notebooks/{name}.ipynb has no image/png"
            layout = data.get(PLOTLY_MIME, {}).get("layout", {})
            width = layout.get("width") or DEFAULT_SIZE[0]
            height = layout.get("height") or DEFAULT_SIZE[1]
            png_w, png_h = _png_size(data["image/png"])
            assert png_w >= width and abs(png_h / png_w - height / width) < 0.01, "not this figure's shape"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_top_to_bottom(name, kernel_env):
    from nbclient import NotebookClient

    nb = nbformat.read(_notebook(name), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell and its traceback, on any error
    ran = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in ran)
    assert not [o for c in ran for o in c.outputs if o.output_type == "error"]


def _figure_cell(fig_json: dict | None, html: str) -> nbformat.NotebookNode:
    """A code cell as plotly's `plotly_mimetype+notebook` renderer leaves it: the plotly.js loader, then the
    figure (its JSON and the HTML that draws it with plotly.js)."""
    cell = nbformat.v4.new_code_cell("fig.show()")
    loader = {"text/html": "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"}
    figure = {"text/html": html} | ({PLOTLY_MIME: fig_json} if fig_json else {})
    cell.outputs = [
        nbformat.v4.new_output("display_data", data=loader),
        nbformat.v4.new_output("display_data", data=figure),
    ]
    return cell


def test_static_figures_draws_each_figure_from_its_json():
    """A red bar filling the plot area comes back as a PNG whose centre is red, at the figure's size times
    the generator's scale; the plotly.js loader and the figure's script are gone, its JSON stays."""
    import plotly.graph_objects as go
    from PIL import Image

    fig = go.Figure(go.Bar(x=[0], y=[1], width=[1], marker={"color": "#ff0000", "line": {"width": 0}}))
    fig.update_layout(width=200, height=100, margin={"l": 0, "r": 0, "t": 0, "b": 0}, showlegend=False)
    fig.update_xaxes(visible=False, range=[-0.5, 0.5])
    fig.update_yaxes(visible=False, range=[0, 1])
    nb = nbformat.v4.new_notebook()
    nb.cells.append(
        _figure_cell(json.loads(fig.to_json()), '<div id="x"></div><script>Plotly.newPlot</script>')
    )
    maker = _maker()
    assert maker.static_figures(nb) == 1
    [output] = nb.cells[0].outputs
    assert set(output.data) == {PLOTLY_MIME, "image/png", "text/plain"}
    image = Image.open(io.BytesIO(base64.b64decode(output.data["image/png"]))).convert("RGB")
    assert image.size == (round(200 * maker.PNG_SCALE), round(100 * maker.PNG_SCALE))
    assert image.getpixel((image.width // 2, image.height // 2)) == (255, 0, 0)
    assert image.getpixel((image.width // 2, image.height // 2 + 10)) == (255, 0, 0)


def test_static_figures_refuses_a_figure_it_cannot_draw():
    """A figure saved as HTML alone (plotly's `notebook` renderer without `plotly_mimetype`) has no JSON to
    render: the generator says so instead of committing a notebook whose figure shows nowhere."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(_figure_cell(None, '<div id="x"></div><script>Plotly.newPlot("x", [])</script>'))
    with pytest.raises(RuntimeError, match="plotly_mimetype"):
        _maker().static_figures(nb)
