"""The benchmark and tool scripts are not run by the suite (they time things), but they must still import:
a renamed library function should fail here, not in the next person's benchmark run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# mkdocs_hooks.py is a plugin mkdocs imports, not a script: tests/test_docs.py builds the site with it.
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py")) + sorted(
    p for p in (ROOT / "tools").glob("*.py") if p.name != "mkdocs_hooks.py"
)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_imports_and_has_a_main(path):
    spec = importlib.util.spec_from_file_location(f"_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs imports and definitions only: each script guards its main()
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"
