"""Hugging Face models: `hf:path/to/dir` (a `save_pretrained` folder) and `hf:org/name` (a hub id,
downloaded once into the usual Hugging Face cache where the machine has network).

The architecture comes from the config (`config.architectures[0]`, the class `save_pretrained` recorded,
as the `AutoModelFor...` classes map it; `AutoModel` where the config names none). No remote code runs
(`trust_remote_code` stays off) and weights load from safetensors, or `.bin` through transformers' own
`weights_only` loading. The model returns its `ModelOutput` (a dict of named tensors), which every analysis
reads by name. Without data its inputs are built from the config (`hf_input_spec`): token ids below
`vocab_size` and an attention mask of ones for text, `num_channels x image_size x image_size` pixels for
vision, passed by name. Imports transformers only when an `hf:` spec is used.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from analysis.errors import WorkbenchError, first_line
from analysis.model.inputs import InputField, InputSpec

PREFIX = "hf:"
DEFAULT_SEQUENCE_LENGTH = 16  # tokens per sample of the example inputs, where no data or shape says


def load_hf(ref: str) -> nn.Module:
    """The model a `save_pretrained` folder or hub id names, in eval mode, returning `ModelOutput`s."""
    ref = ref.strip()
    if not ref:
        raise WorkbenchError("hf: needs a folder made by save_pretrained or a hub id like org/name")
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - it is in requirements.txt
        raise WorkbenchError("hf: specs need the transformers package (pip install transformers)") from exc
    local = Path(ref).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise WorkbenchError(
            f"{local} has no config.json: give a folder written by model.save_pretrained(...)"
        )
    source = str(local) if local.exists() else ref
    try:
        config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=False)
    except Exception as exc:
        raise WorkbenchError(
            f"cannot read a Hugging Face config from {ref!r} ({first_line(exc, 160)}): give a save_pretrained "
            "folder or a hub id (downloads need network)"
        ) from exc
    config.return_dict = True
    if hasattr(config, "use_cache"):
        config.use_cache = False  # a cache object is an output no metric or exporter reads
    cls = _model_class(transformers, config)
    try:
        model = cls.from_pretrained(source, config=config, trust_remote_code=False)
    except Exception as exc:
        raise WorkbenchError(f"cannot load the Hugging Face model {ref!r}: {first_line(exc, 200)}") from exc
    return model.eval()


def _model_class(transformers, config):
    """The class the config's `architectures` names (a transformers class), else `AutoModel`."""
    for name in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, name, None)
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls
    return transformers.AutoModel


def is_hf_model(model: nn.Module) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PreTrainedModel)


def hf_input_spec(model: nn.Module, sequence_length: int | None = None) -> InputSpec | None:
    """Example inputs from the config (None where the model's main input is neither token ids nor pixels)."""
    if not is_hf_model(model):
        return None
    config = model.config
    main = getattr(model, "main_input_name", "input_ids")
    if main == "pixel_values":
        size = getattr(config, "image_size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        channels = int(getattr(config, "num_channels", 3))
        return InputSpec((InputField("pixel_values", (channels, int(h), int(w)), keyword=True),))
    if main == "input_ids":
        limit = int(getattr(config, "max_position_embeddings", 0) or 512)
        length = int(sequence_length or min(DEFAULT_SEQUENCE_LENGTH, limit))
        vocab = int(getattr(config, "vocab_size", 2) or 2)
        import torch

        return InputSpec(
            (
                InputField("input_ids", (length,), torch.int64, keyword=True, high=vocab),
                InputField("attention_mask", (length,), torch.int64, keyword=True, fill=1),
            ),
            notes=(f"inputs built from the config: {length} token ids below {vocab} and a mask of ones",),
        )
    return None


__all__ = ["DEFAULT_SEQUENCE_LENGTH", "PREFIX", "hf_input_spec", "is_hf_model", "load_hf"]
