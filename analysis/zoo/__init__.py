"""Built-in models trained on the bundled digits data; weights ship as .safetensors beside this file."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from analysis.errors import WorkbenchError
from analysis.zoo.models import ZOO

WEIGHTS_DIR = Path(__file__).parent / "weights"


def weights_path(name: str) -> Path:
    """Where the trained weights of zoo model `name` live."""
    return WEIGHTS_DIR / f"{name}.safetensors"


def build(name: str, pretrained: bool = True) -> nn.Module:
    """A zoo model in eval mode, with its shipped weights unless `pretrained` is False."""
    if name not in ZOO:
        raise WorkbenchError(f"unknown zoo model {name!r}: choose one of {', '.join(sorted(ZOO))}")
    model = ZOO[name]()
    if pretrained:
        from safetensors.torch import load_file

        path = weights_path(name)
        if not path.exists():
            raise WorkbenchError(f"{path} is missing: run `python -m analysis.zoo.train` to rebuild it")
        model.load_state_dict(load_file(str(path)))
    return model.eval()


__all__ = ["ZOO", "WEIGHTS_DIR", "build", "weights_path"]
