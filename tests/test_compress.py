"""compress(): real removal, permanent masks, untouched input, save and reload, many architectures."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli
from torch import nn

from analysis.compression.compress import compress
from analysis.compression.plan import CompressionPlan
from analysis.data import load_data
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
FAST = {"latency_rounds": 1, "runs_per_round": 1, "warmup": 1}


def _conv_params(c_in: int, c_out: int, k: int = 3) -> int:
    return c_in * c_out * k * k


def test_structured_pruning_removes_channels_physically(cnn, digits):
    seen = []
    result = compress(
        cnn,
        {"layers": {"features.3": {"prune": 0.5}}},
        digits,
        progress=lambda d, t: seen.append((d, t)),
        **FAST,
    )
    assert (
        seen
        and seen[-1][0] == seen[-1][1]
        and all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))
    )
    m = result.model
    assert m.features[3].weight.shape == (16, 32, 3, 3)
    assert m.features[4].weight.shape == (16,) and m.features[4].running_mean.shape == (16,)
    assert m.features[7].weight.shape == (64, 16, 3, 3)
    assert cnn.features[3].weight.shape == (32, 32, 3, 3)  # the input model keeps its channels
    # by hand: features.3 loses 16 filters (16*32*9 weights) and its BN 2*16; features.7 loses 64*16*9 inputs
    removed = 16 * _conv_params(32, 1) + 2 * 16 + _conv_params(16, 64)
    assert result.before.params - result.after.params == removed
    # MACs by hand: features.3 runs at 16x16, features.7 at 8x8 (after the first pool)
    assert result.before.macs - result.after.macs == 16 * 32 * 9 * 16 * 16 + 64 * 16 * 9 * 8 * 8
    assert result.groups == [
        {
            "name": "features.3",
            "members": ["features.3"],
            "ratio": 0.5,
            "channels_before": 32,
            "channels_after": 16,
            "removed": 16,
        }
    ]


def test_removal_equals_zeroing_the_lowest_l1_channels_after_their_norm(cnn, digits):
    """Reference: a plain copy where the 16 lowest-L1 filters of features.3 are zeroed after the BN."""
    import copy

    result = compress(cnn, {"layers": {"features.3": {"prune": 0.5}}}, digits, **FAST)
    reference = copy.deepcopy(cnn)
    l1 = [float(reference.features[3].weight[c].detach().abs().sum()) for c in range(32)]
    lowest = sorted(range(32), key=lambda c: (l1[c], c))[:16]
    with torch.no_grad():
        for c in lowest:
            reference.features[4].weight[c] = 0.0
            reference.features[4].bias[c] = 0.0
    x = digits.x[:64]
    with torch.inference_mode():
        assert torch.allclose(result.model(x), reference(x), atol=1e-5)
    assert result.after.accuracy == evaluate(reference, digits).accuracy


def test_residual_groups_shrink_together_and_macs_and_params_drop(resnet, digits):
    result = compress(resnet, CompressionPlan.uniform(0.5), digits, **FAST)
    m = result.model
    # conv1, layer1.0.conv2 and layer1.1.conv2 feed the same residual adds: one group, one width
    widths = {m.conv1.weight.shape[0], m.layer1[0].conv2.weight.shape[0], m.layer1[1].conv2.weight.shape[0]}
    assert widths == {8}
    assert m.layer2[0].downsample[0].weight.shape[0] == m.layer2[0].conv2.weight.shape[0] == 16
    assert m.fc.weight.shape == (10, 32)  # the final classifier keeps its 10 outputs
    assert result.after.macs < 0.3 * result.before.macs and result.after.params < 0.3 * result.before.params
    assert any("coupled" in note for note in result.notes)
    with torch.inference_mode():
        assert m(digits.x[:4]).shape == (4, 10)


def test_unstructured_masks_are_permanent_and_sparsity_is_counted(cnn, digits):
    result = compress(cnn, CompressionPlan.uniform(0.6, structured=False), digits, **FAST)
    plain_zeros = plain_total = 0
    for name, module in result.model.named_modules():
        assert "weight_orig" not in dict(module.named_parameters(recurse=False))
        assert "weight_mask" not in dict(module.named_buffers(recurse=False))
        assert len(module._forward_pre_hooks) == 0
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w = module.weight.detach()
            zeros = sum(1 for v in w.flatten().tolist() if v == 0.0)
            assert zeros == round(0.6 * w.numel()), name
            kept = w.abs().flatten()
            assert (
                kept[kept > 0].min() >= cnn.get_submodule(name).weight.abs().flatten().kthvalue(zeros).values
            )
            plain_zeros += zeros
            plain_total += w.numel()
    assert result.sparsity == pytest.approx(plain_zeros / plain_total)
    assert result.after.params == result.before.params and result.after.macs == result.before.macs
    assert result.after.nonzero_params < result.before.nonzero_params
    assert result.sparse_size_bytes is not None and result.sparse_size_bytes < result.after.size_bytes
    assert any("dense kernels" in note and "sparse" in note for note in result.notes)
    assert set(result.unstructured) == {"features.0", "features.3", "features.7", "features.10"} | {
        "classifier.0",
        "classifier.2",
    }


def _fingerprint(model: nn.Module) -> tuple[str, dict, bool]:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return hashlib.sha256(buffer.getvalue()).hexdigest(), state, model.training


def test_the_input_model_is_left_byte_for_byte_unchanged(cnn, digits):
    digest, state, training = _fingerprint(cnn)
    plan = {
        "default": {"prune": 0.25, "bits": 8},
        "layers": {"features.7": {"structured": False, "prune": 0.5}, "classifier.0": {"bits": 4}},
        "finetune": {"epochs": 1, "distill": True},
    }
    small = digits.subset(128)
    result = compress(cnn, plan, small, **FAST)
    assert result.model is not cnn
    after_digest, after_state, after_training = _fingerprint(cnn)
    assert after_state.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(after_state[key], value), key
    assert after_digest == digest and after_training == training
    assert result.finetune is not None and result.finetune["distilled"]


def test_cli_saves_a_model_that_reloads_to_the_same_accuracy(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"layers": {"features.3": {"prune": 0.5}, "classifier.2": {"bits": 8}}}))
    saved, out = tmp_path / "small.pt", tmp_path / "out.json"
    run = run_cli(
        "compress",
        "--plan",
        str(plan),
        "--save",
        str(saved),
        "--rounds",
        "1",
        "--json",
        str(out),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    payload = json.loads(out.read_text())
    for side in ("before", "after"):
        assert {"accuracy", "loss", "params", "macs", "size_bytes", "latency_ms"} <= set(payload[side])
    assert payload["plan"]["layers"]["features.3"] == {"prune": 0.5}
    assert payload["after"]["macs"] < payload["before"]["macs"]
    again = run_cli("evaluate", "--model", str(saved), "--trust-pickle", "--json", "-", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["accuracy"] == payload["after"]["accuracy"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_cli_rejects_a_plan_naming_a_missing_layer_in_one_line(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"layers": {"features.99": {"prune": 0.5}}}))
    out = tmp_path / "out.json"
    run = run_cli("compress", "--plan", str(plan), "--json", str(out), cwd=tmp_path)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "features.99" in lines[0] and "Traceback" not in run.stderr
    assert not out.exists()


def test_the_final_classifier_keeps_its_outputs_unless_pruned_unstructured(cnn, digits):
    result = compress(cnn, CompressionPlan.uniform(0.5), digits.subset(64), **FAST)
    assert result.model.classifier[2].weight.shape[0] == 10
    assert result.model.classifier[0].weight.shape[0] == 64
    with pytest.raises(WorkbenchError, match="classifier.2.*final classifier"):
        compress(cnn, {"layers": {"classifier.2": {"prune": 0.5}}}, digits.subset(64), **FAST)


class _TabularNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(6, 64), nn.Linear(64, 32), nn.Linear(32, 3)

    def forward(self, x):
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x)))))


def test_a_linear_only_model_on_tabular_tensors_compresses(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)
    np.savez(tmp_path / "tab.npz", x=x[:300], y=y[:300], x_train=x[300:], y_train=y[300:])
    data = load_data(f"tensors:{tmp_path / 'tab.npz'}")
    torch.manual_seed(0)
    model = _TabularNet()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(100):
        loss = F.cross_entropy(model(data.x_train), data.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    plan = {"default": {"prune": 0.5, "bits": 8}, "finetune": {"epochs": 5, "distill": True, "lr": 0.01}}
    result = compress(model, plan, data, **FAST)
    assert result.before.accuracy > 0.9
    assert result.after.accuracy > 0.9
    m = result.model
    assert m.fc1.out_features == 32 and m.fc2.in_features == 32 and m.fc2.out_features == 16
    assert m.out.out_features == 3
    assert result.after.macs == 6 * 32 + 32 * 16 + 16 * 3
    assert result.after.size_bytes < result.before.size_bytes / 4


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 12, 1)
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        x = torch.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))
        x = F.relu6(self.pw(F.relu6(self.dw(x))))
        return self.head(x.mean(dim=(2, 3)))


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        tokens = self.embed(x.flatten(2).transpose(1, 2).reshape(x.shape[0], 16, 16))
        tokens = tokens + self.attn(tokens, tokens, tokens, need_weights=False)[0]
        tokens = tokens + self.mlp(tokens)
        return self.head(tokens.mean(dim=1))


@pytest.mark.parametrize("factory", [_Concat, _Attention])
def test_concatenations_depthwise_and_attention_models_compress(factory, digits):
    torch.manual_seed(0)
    model = factory().eval()
    data = digits.subset(64)
    with torch.inference_mode():
        logits = model(data.x[:2])
    result = compress(model, {"default": {"prune": 0.5}}, data, **FAST)
    assert result.after.macs < result.before.macs
    assert result.after.params < result.before.params
    with torch.inference_mode():
        assert result.model(data.x[:2]).shape == logits.shape


def test_attention_keeps_a_width_its_heads_divide(digits):
    torch.manual_seed(0)
    data = digits.subset(64)
    # round(0.3 x 32) = 10 channels would leave 22, which 4 heads cannot share: 8 go instead, 24 stay.
    result = compress(_Attention().eval(), {"default": {"prune": 0.3}}, data, **FAST)
    attn = result.model.attn
    assert attn.embed_dim == 24 and attn.embed_dim % attn.num_heads == 0
    assert result.model.embed.out_features == 24
    assert any("multiple of the 4 attention heads" in note for note in result.notes)
    with torch.inference_mode():
        assert result.model(data.x[:2]).shape == (2, 10)
