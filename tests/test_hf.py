"""Hugging Face models through `hf:` specs: a tiny BERT and a tiny ViT built from `transformers` configs and
saved with `save_pretrained` into a temporary folder (nothing is downloaded), through summary (inputs built
from the config), a sensitivity sweep and int8 on ONNX Runtime, on random unlabelled inputs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from analysis.errors import WorkbenchError
from analysis.model.specs import load_model, model_input_shape
from tests.conftest import run_cli

transformers = pytest.importorskip("transformers")

SEQ = 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    bert = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32, num_labels=3,
    )  # fmt: skip
    transformers.BertForSequenceClassification(bert).save_pretrained(root / "bert")
    vit = transformers.ViTConfig(
        image_size=16, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=10,
    )  # fmt: skip
    transformers.ViTForImageClassification(vit).save_pretrained(root / "vit")
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(20, SEQ, dtype=torch.long)
    mask[:, -3:] = 0  # padded tails: the mask matters
    save_file({"input_ids": torch.randint(0, 64, (20, SEQ), generator=g), "attention_mask": mask},
              str(root / "text.safetensors"))  # fmt: skip
    save_file({"pixel_values": torch.randn(20, 1, 16, 16, generator=g)}, str(root / "pixels.safetensors"))
    return {"bert": f"hf:{root / 'bert'}", "vit": f"hf:{root / 'vit'}",
            "text": f"tensors:{root / 'text.safetensors'}", "pixels": f"tensors:{root / 'pixels.safetensors'}"}  # fmt: skip


def test_loads_the_architecture_from_the_config(tiny):
    bert = load_model(tiny["bert"])
    assert type(bert).__name__ == "BertForSequenceClassification" and not bert.training
    spec = model_input_shape(bert)
    assert spec.names == ("input_ids", "attention_mask") and spec.form == "dict"
    assert spec.fields[0].dtype == torch.int64 and spec.fields[0].high == 64
    ids = spec.example(2)["input_ids"]
    assert ids.dtype == torch.int64 and int(ids.max()) < 64
    vit = load_model(tiny["vit"])
    assert model_input_shape(vit).shapes == ((1, 16, 16),)
    with pytest.raises(WorkbenchError, match="config.json"):
        load_model(f"hf:{tiny['text'].removeprefix('tensors:')}")  # a file that is no save_pretrained folder


@pytest.mark.parametrize("which", ["bert", "vit"])
def test_summary_without_data(which, tiny):
    done = run_cli("summary", "--model", tiny[which], "--no-record")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    model = load_model(tiny[which])
    assert payload["total"]["params"] == sum(p.numel() for p in model.parameters())
    assert payload["total"]["macs"] > 0
    names = [f["name"] for f in payload["input_shape"]]
    assert names == (["input_ids", "attention_mask"] if which == "bert" else ["pixel_values"])


@pytest.mark.parametrize(("which", "data"), [("bert", "text"), ("vit", "pixels")])
def test_sweep_and_int8_on_onnxruntime(which, data, tiny, tmp_path):
    sweep = run_cli("sensitivity", "--model", tiny[which], "--data", tiny[data], "--kind", "quant",
                    "--bits", "4", "--no-record", timeout=600)  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    swept = json.loads(sweep.stdout)
    assert swept["metric"]["name"] == "agreement" and swept["baseline"]["agreement"] == 1.0
    assert len(swept["layers"]) >= 12  # every Linear of the two blocks and the heads
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"default": {"prune": 0.0, "bits": 8}}))
    done = run_cli("compress", "--model", tiny[which], "--data", tiny[data], "--plan", str(plan),
                   "--runtime", "onnxruntime", "--rounds", "2", "--no-record", timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    ort = result["runtimes"]["onnxruntime"] if result["runtimes"] else {"after": result["after"]}
    assert ort["after"]["runtime"] == "onnxruntime"
    assert any("run real int8" in note for note in result["notes"])
    assert result["before"]["agreement"] == 1.0 and 0.5 <= result["after"]["agreement"] <= 1.0
