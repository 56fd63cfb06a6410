"""The library never imports streamlit: import analysis and every submodule in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import importlib, pkgutil, sys
import analysis
names = [m.name for m in pkgutil.walk_packages(analysis.__path__, "analysis.")]
for name in names:
    importlib.import_module(name)
print(len(names))
print("streamlit" in sys.modules, sorted(m for m in sys.modules if m.split(".")[0] == "streamlit")[:3])
"""


def test_analysis_and_all_submodules_import_without_streamlit():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    count, loaded = out.stdout.strip().splitlines()[-2:]
    assert int(count) >= 20  # the walk really found the submodules
    assert loaded.startswith("False"), loaded
