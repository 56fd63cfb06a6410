"""Shared fixtures: the default model and data are loaded once per session and never modified."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(min(2, os.cpu_count() or 1))


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
