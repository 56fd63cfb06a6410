"""Shared fixtures (the default model and data, loaded once per session and never modified) and shared
helpers the test modules import: `run_cli` (the command line in a subprocess) and the `Untraceable` model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="session")
def _private_results_store(tmp_path_factory):
    """The CLI records every run by default: keep the tests' runs out of the user's data directory."""
    if "WORKBENCH_DATA_DIR" in os.environ:
        yield
        return
    os.environ["WORKBENCH_DATA_DIR"] = str(tmp_path_factory.mktemp("workbench-data"))
    try:
        yield
    finally:
        os.environ.pop("WORKBENCH_DATA_DIR", None)


@pytest.fixture(scope="session")
def digits():
    from analysis import load_data

    return load_data("digits")


@pytest.fixture(scope="session")
def cnn():
    from analysis import load_model

    return load_model("zoo:digits-cnn")


@pytest.fixture(scope="session")
def resnet():
    from analysis import load_model

    return load_model("zoo:digits-resnet")


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m analysis ARGS` in a fresh interpreter (the repository on PYTHONPATH), output as text."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, so every fx-based path must fall back."""

    def __init__(self, channels: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        if h.mean() > -100:  # depends on values (always true after a ReLU): fx cannot trace this
            h = h * 2
        return self.fc(h.mean(dim=(2, 3)))
