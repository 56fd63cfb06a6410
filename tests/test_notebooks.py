"""The tutorial notebooks run top to bottom on a fresh kernel, and the committed copies are current.

Each notebook is executed with nbclient on a new `python3` kernel, with `notebooks/` as its working
directory, the repository root on `PYTHONPATH` and one intra-op thread; any cell error fails the test.
`WORKBENCH_FAST=1` shortens the notebooks' timing loops, sweeps, sample caps and fine-tuning (each notebook
reads it in its first cell).
"""

from __future__ import annotations

import importlib.util
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
MAX_NOTEBOOK_BYTES = 6_000_000  # plotly.js (about 4.8 MB) is inlined once per notebook, plus the figures


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
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert sum("* plotly.js v" in h for h in html) == 1, "plotly.js must be inlined exactly once"
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES
    json.loads(path.read_text())  # valid JSON a code host can render


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
