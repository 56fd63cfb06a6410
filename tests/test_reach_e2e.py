"""Issue 19's end-to-end promise: models nobody here wrote for the workbench (every pattern of
tests/pattern_models.py, tests/reach_models.py and tests/e2e_models.py, the zoo autoencoder and ViT, a tiny
Hugging Face BERT and ViT through `hf:` specs) each go through summary, a structured sensitivity sweep, 50%
structured pruning with a plan, int8 on ONNX Runtime and a safe save that reloads, on random UNLABELLED
inputs (metric auto: agreement or PSNR against the original model).

What is compared with something independent: parameter counts with `sum(p.numel())` and, after pruning,
with Torch-Pruning 1.6.1 run directly on the same model (or a count worked out by hand where it gets the
pattern wrong, tests/test_pruning_reach.py); output shapes with the original's; ONNX Runtime's outputs with
eager PyTorch's; a reloaded `.pruned.safetensors` with the saved model (outputs bit for bit, so the score
too) and a reloaded `.onnx` with the score ONNX Runtime gave during `compress`. The command line runs as a
user would for a representative few (two inputs from a `file.py:build`, the autoencoder, the BERT)."""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from analysis.compression.compress import compress
from analysis.cost import summarize
from analysis.data import load_data
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate
from analysis.metrics import PSNR_CAP_DB, scoring
from analysis.model.inputs import as_model_inputs, positional_names
from analysis.model.layers import attention_heads, call_model, flat_outputs, output_layers
from analysis.model.outputs import flatten_outputs
from analysis.model.specs import load_model
from analysis.runtime.artifacts import save_compressed
from analysis.runtime.onnx import OnnxModule, export_onnx
from analysis.sensitivity.sweep import sensitivity_sweep
from analysis.transforms.groups import find_groups, remove_channels
from tests import e2e_models as E
from tests import pattern_models as P
from tests import reach_models as R
from tests.conftest import run_cli

SAMPLES = 12
PLAN = {"default": {"prune": 0.5, "criterion": "l1", "structured": True, "bits": 8}}

# Patterns Torch-Pruning 1.6.1 gets wrong, counted by hand in tests/test_pruning_reach.py (same models).
BY_HAND = {
    "linear-reshape-convtranspose": 1664 + 516 + 8 + 195,
    "split": 60 + 224 + 45,
    "chunk": 80 + 148 + 148 + 25,
}

E2E_BY_HAND = {
    # Torch-Pruning leaves project -> view -> up1 whole; 6 of the 12 blocks of 16 project outputs go with
    # up1's inputs: project 16 -> 96 (1,632), up1 6 -> 4 (388), up2 4 -> 2 (130), fc 512 -> 5 (2,565)
    "view-chain-classifier": 1632 + 388 + 130 + 2565,
    "intermediate-outputs": 0,  # every Linear's outputs are model outputs: nothing to prune
}


@dataclass(frozen=True)
class Case:
    """A model spec, its random inputs for n samples (arrays named as a `tensors:` file names them), the
    layers its outputs expose (Torch-Pruning's ignored layers), and the parameter count 50% structured
    pruning must leave: Torch-Pruning's, a count by hand (where Torch-Pruning gets the pattern wrong or
    cannot run), None (no reference: only "fewer"), or 0 where nothing may be pruned at all."""

    spec: str
    inputs: Callable[[int], dict[str, torch.Tensor]]
    kept: tuple[str, ...]
    reference: str | int | None = "torch-pruning"
    export_checked: bool = True  # the pruned float model exported to ONNX and compared with eager


def _named(build: Callable[[], nn.Module], inputs: Callable[[int], object]) -> Callable[[int], dict]:
    """A pattern's inputs as a `tensors:` file holds them: `x` for one tensor, else forward's names."""

    def make(n: int) -> dict[str, torch.Tensor]:
        value = inputs(n)
        if isinstance(value, torch.Tensor):
            return {"x": value}
        if isinstance(value, dict):
            return value
        return dict(zip(positional_names(build()), value, strict=True))

    return make


def _shapes(per_sample: dict[str, tuple[int, ...]]) -> Callable[[int], dict[str, torch.Tensor]]:
    def make(n: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(3)
        return {k: torch.randn((n, *s), generator=g) for k, s in per_sample.items()}

    return make


def _cases() -> dict[str, Case]:
    cases = {}
    for name, p in P.PATTERNS.items():
        ref = BY_HAND.get(name, "torch-pruning")
        cases[f"pattern:{name}"] = Case(f"tests.pattern_models:{p.build.__name__}", _named(p.build, p.inputs),
                                        p.kept, ref)  # fmt: skip
    kept = {"two_inputs": ("head.2",), "token_classifier": ("mlp.2",), "tuple_output": ("classifier", "features"),
            "dict_output": ("embedding", "scores"), "map_output": ("net.4",)}  # fmt: skip
    for name in R.PATTERNS:
        # The token classifier's Embedding is not a prunable layer here (Torch-Pruning prunes it).
        ref = None if name == "token_classifier" else "torch-pruning"
        inputs = lambda n, name=name: R.random_inputs(name, n)  # noqa: E731
        cases[f"reach:{name}"] = Case(f"tests.reach_models:build_{name}", inputs, kept[name], ref)
    for name, (cls, per_sample, kept_layers) in E.E2E_PATTERNS.items():
        ref = E2E_BY_HAND.get(name, "torch-pruning")
        cases[f"e2e:{name}"] = Case(f"tests.e2e_models:{cls.__name__}", _shapes(per_sample), kept_layers, ref)
    image = _shapes({"x": (1, 16, 16)})
    cases["zoo:digits-autoencoder"] = Case("zoo:digits-autoencoder", image, ("decoder.5",))
    # Torch-Pruning fails on its fused qkv read by scaled_dot_product_attention (IndexError). By hand:
    # half of the heads (qkv 16 -> 48: 816, proj 16 -> 16: 272), two norms (64), mlp 16 -> 32 -> 16
    # (1,072) per block; patch (272), pos (256), norm (32), head (170).
    cases["zoo:digits-vit"] = Case("zoo:digits-vit", image, ("head",), 2 * (816 + 272 + 64 + 1072) + 730)
    return cases


CASES = _cases()
# A conv/linear stack whose pruned export is no harder than its unpruned one (which compress's ONNX
# Runtime "before" score already compares with eager): the fp32 export check is left out to save time.
PLAIN = {"pattern:convtranspose1d", "pattern:single-channel-output", "pattern:unused-parameter",
         "pattern:grouped-conv", "pattern:width-concat", "pattern:depthwise", "pattern:residual",
         "reach:map_output", "reach:dict_output", "e2e:residual-mlp", "e2e:normed-mask", "e2e:vgg",
         "e2e:inverted-residual-map", "e2e:wide-and-deep", "zoo:digits-autoencoder"}  # fmt: skip
CASES = {name: replace(case, export_checked=name not in PLAIN) for name, case in CASES.items()}
# The slowest, each a pattern another case here also covers: `-m "not slow"` leaves them out.
SLOW = {"e2e:inverted-residual-map", "pattern:convtranspose1d", "reach:two_inputs", "pattern:tuple-output",
        "pattern:dict-output", "pattern:width-concat", "e2e:residual-mlp", "pattern:single-channel-output"}  # fmt: skip


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _outputs(model: nn.Module, inputs) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return flatten_outputs(call_model(model.eval(), as_model_inputs(inputs)))


def _torch_pruning(model: nn.Module, inputs, kept: tuple[str, ...]) -> int:
    """Parameters left by Torch-Pruning's MetaPruner at 50% (L1 magnitude, `kept` ignored) on a copy; a
    timm-style fused `qkv` loses half of its heads, given as its examples give them (`num_heads`)."""
    import torch_pruning as tp

    model = copy.deepcopy(model)
    heads = {m.qkv: m.num_heads for m in model.modules() if isinstance(getattr(m, "qkv", None), nn.Linear)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp.pruner.MetaPruner(
            model, as_model_inputs(inputs), importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
            ignored_layers=[model.get_submodule(n) for n in kept], num_heads=heads, prune_num_heads=bool(heads),
            prune_head_dims=not heads, head_pruning_ratio=0.5 if heads else 0.0,
            output_transform=lambda out: [t for t in flat_outputs(out) if t.grad_fn is not None],
        ).step()  # fmt: skip
    return _params(model)


def _write_inputs(arrays: dict[str, torch.Tensor], path: Path) -> str:
    save_file({k: v.contiguous() for k, v in arrays.items()}, str(path))
    return f"tensors:{path}"


def run_pipeline(
    case: Case,
    tmp_path: Path,
    stages: dict | None = None,
    *,
    plan: dict | None = None,
    sweep_layers: list[str] | None = None,
    sweep_ratios: tuple[float, ...] = (0.5,),
) -> dict:
    """Every stage on one model, asserting as it goes; `stages` (when given) records each stage that
    passed, so a caller can tell how far a failing model got. `plan` replaces 50% of every group and 8
    bits everywhere; `sweep_layers` restricts the sweep."""
    stages = {} if stages is None else stages
    torch.manual_seed(0)
    model = load_model(case.spec)
    arrays = case.inputs(SAMPLES)
    data = load_data(_write_inputs(arrays, tmp_path / "inputs.safetensors"), None, positional_names(model))
    assert data.y is None  # unlabelled

    x = data.x  # as the model takes them: one tensor, or several inputs by name
    summary = summarize(model, data.input_shape)
    assert summary.total_params == _params(model) and summary.total_macs > 0
    stages["summary"] = True

    score = scoring("auto", model, data)
    sweep = None
    if case.reference == 0:
        with pytest.raises(WorkbenchError, match="no prunable channel groups"):
            sensitivity_sweep(model, data, kind="structured", ratios=[0.5], metric=score)
    else:
        sweep = sensitivity_sweep(model, data, kind="structured", ratios=sweep_ratios, layers=sweep_layers,
                                  metric=score)  # fmt: skip
        assert sweep.layers, "no prunable group"
        best = PSNR_CAP_DB if score.info.name == "psnr" else 1.0
        assert sweep.baseline_accuracy == best
        assert all(math.isfinite(a) for c in sweep.layers.values() for a in c.accuracy)
    stages["sweep"] = True

    result = compress(model, plan or PLAN, data, runtimes=("onnxruntime",), batch_size=4, latency_rounds=1,
                      runs_per_round=1, warmup=0, metric=score)  # fmt: skip
    pruned = result.float_model
    assert sorted(output_layers(model, x[:2])) == sorted(case.kept)  # the graph finds the hand-listed
    if case.reference == 0:
        assert _params(pruned) == _params(model)
    else:
        assert _params(pruned) < _params(model)
    want = {k: v.shape for k, v in _outputs(model, x).items()}
    assert {k: v.shape for k, v in _outputs(pruned, x).items()} == want
    if case.reference == "torch-pruning":
        assert _params(pruned) == _torch_pruning(model, x[:2], case.kept)
    elif case.reference:
        assert _params(pruned) == case.reference
    stages["prune"] = True

    assert result.after.runtime == "onnxruntime", result.notes
    assert any("run real int8" in n for n in result.notes), result.notes[-3:]
    assert math.isfinite(result.after.accuracy) and result.before.metric.name == score.info.name
    assert result.before.accuracy >= (60.0 if score.info.name == "psnr" else 0.99)
    if case.export_checked:  # the pruned float model on ONNX Runtime gives eager's outputs
        exported = export_onnx(pruned, as_model_inputs(x[:2]))
        eager, ort = _outputs(pruned, x), _outputs(OnnxModule(exported.model_bytes), x)
        assert list(ort) == list(eager)
        for key, value in eager.items():
            torch.testing.assert_close(ort[key], value, atol=1e-4 * (1 + float(value.abs().max())), rtol=1e-4)
    stages["int8-onnxruntime"] = True

    safe = tmp_path / "small.pruned.safetensors"
    save_compressed(result, safe, spec=case.spec, input_shape=data.input_shape, data=data)
    reloaded = load_model(case.spec, weights=safe)
    # A zoo architecture is allow-listed: the file alone names it.
    direct = load_model(str(safe)) if case.spec.startswith("zoo:") else reloaded
    for key, value in _outputs(pruned, x).items():
        assert torch.equal(_outputs(reloaded, x)[key], value) and torch.equal(_outputs(direct, x)[key], value)
    same = evaluate(reloaded, data, metric=score).accuracy
    assert same == evaluate(pruned, data, metric=score).accuracy
    onnx = tmp_path / "small.onnx"
    save_compressed(result, onnx, spec=case.spec, input_shape=data.input_shape, data=data)
    assert evaluate(load_model(str(onnx)), data, metric=score).accuracy == pytest.approx(
        result.after.accuracy, rel=1e-6, abs=1e-6
    )
    stages["save-reload"] = True
    return {"model": model, "data": data, "result": result, "score": score, "sweep": sweep}


def _heads_by_hand(model: nn.Module, ratio: float) -> int:
    """Parameters after removing `ratio` of every attention module's heads, by hand: the query, key and
    value Linear layers each lose `removed heads x head size` outputs (weights and biases), the output
    projection reading them as many inputs (BERT: `attention.output.dense`; ViT: `o_proj`)."""
    removed = 0
    modules = dict(model.named_modules())
    for name, module in modules.items():
        heads = getattr(module, "num_attention_heads", getattr(module, "num_heads", None))
        size = getattr(module, "attention_head_size", getattr(module, "head_dim", None))
        query = getattr(module, "query", getattr(module, "q_proj", None))
        if not (isinstance(heads, int) and isinstance(size, int) and isinstance(query, nn.Linear)):
            continue
        cut = round(ratio * heads) * size
        projection = getattr(module, "o_proj", None) or modules[name.rsplit(".", 1)[0] + ".output.dense"]
        removed += 3 * cut * (query.in_features + 1) + cut * projection.out_features
    return _params(model) - removed


def hf_case(root: Path, which: str) -> Case:
    """A tiny Hugging Face model saved with save_pretrained under `root` (nothing downloaded)."""
    torch.manual_seed(0)
    if which == "bert":
        model, inputs = P.tiny_bert(3), lambda n: P.bert_inputs(n)
    else:
        model = P.tiny_vit()
        inputs = _shapes({"pixel_values": (1, 16, 16)})
    model.save_pretrained(root / which)
    return Case(f"hf:{root / which}", inputs, ("classifier",), _heads_by_hand(model, 0.5))


def head_plan(model: nn.Module) -> tuple[dict, list[str]]:
    """Half of the heads of every attention module (named by its query layer), 8 bits everywhere."""
    queries = [n for n in attention_heads(model) if n.endswith(("query", "q_proj"))]
    return {"default": {"bits": 8}, "layers": {q: {"prune": 0.5} for q in queries}}, queries


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CASES])
def test_end_to_end_unlabelled(name, tmp_path):
    run_pipeline(CASES[name], tmp_path)


@pytest.fixture(scope="module")
def hf_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf")


@pytest.mark.parametrize("which", ["bert", "vit"])
def test_hugging_face_heads_end_to_end(which, hf_root, tmp_path):
    """`hf:` specs: summary, a sweep of the heads (each query layer's group: whole heads), half the heads
    pruned with 8 bits everywhere, int8 on ONNX Runtime, saved and reloaded."""
    case = hf_case(hf_root, which)
    plan, queries = head_plan(load_model(case.spec))
    assert len(queries) == 2
    done = run_pipeline(case, tmp_path, plan=plan, sweep_layers=queries, sweep_ratios=(0.25, 0.5))
    swept = done["sweep"].layers
    assert sorted(swept) == sorted(queries)
    for query in queries:
        assert len(swept[query].members) == 4  # query, key, value and the projection reading them
    for module in done["result"].float_model.modules():
        heads = getattr(module, "num_attention_heads", getattr(module, "num_heads", None))
        if getattr(module, "query", getattr(module, "q_proj", None)) is not None and heads is not None:
            assert heads == 2


FUSION = '''
import torch
from torch import nn


class Fusion(nn.Module):
    """Two inputs (8 and 4 features), each encoded, concatenated and mixed: 3 class scores."""

    def __init__(self):
        super().__init__()
        self.left = nn.Linear(8, 16)
        self.right = nn.Linear(4, 8)
        self.mix = nn.Linear(24, 12)
        self.out = nn.Linear(12, 3)

    def forward(self, a, b):
        h = torch.cat([torch.relu(self.left(a)), torch.relu(self.right(b))], dim=1)
        return self.out(torch.relu(self.mix(h)))


def build():
    torch.manual_seed(0)
    return Fusion().eval()
'''


def _cli(*args: str) -> dict:
    done = run_cli(*args, "--no-record", timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _plan_file(tmp_path: Path, plan: dict) -> str:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return str(path)


@pytest.mark.slow
def test_cli_two_inputs_from_a_file_spec(tmp_path):
    """A user's file.py:build with two inputs: summary from --input-shape, then an unlabelled tensors file
    through a structured sweep, 50% pruning with int8 on ONNX Runtime, a safe save, and the reload scored
    against the original (the same agreement compress reported)."""
    (tmp_path / "fusion.py").write_text(FUSION)
    spec = f"{tmp_path / 'fusion.py'}:build"
    summary = _cli("summary", "--model", spec, "--input-shape", "1,8;1,4")
    original = load_model(spec)
    assert [f["name"] for f in summary["input_shape"]] == ["a", "b"]
    assert summary["total"]["params"] == _params(original)
    data = _write_inputs(_shapes({"a": (8,), "b": (4,)})(SAMPLES), tmp_path / "unlabelled.safetensors")

    swept = _cli("sensitivity", "--model", spec, "--data", data, "--kind", "structured", "--ratios", "0.5")
    assert swept["metric"]["name"] == "agreement" and swept["baseline"]["agreement"] == 1.0
    assert sorted(swept["layers"]) == ["left", "mix", "right"]  # `out` gives the classes

    saved = tmp_path / "small.pruned.safetensors"
    result = _cli("compress", "--model", spec, "--data", data, "--plan", _plan_file(tmp_path, PLAN), "--runtime",
                  "eager,onnxruntime", "--no-real-int8", "--rounds", "1", "--batch-size", "4", "--save", str(saved))  # fmt: skip
    assert result["after"]["params"] == _torch_pruning(original, _shapes({"a": (8,), "b": (4,)})(2), ("out",))
    ort = result["runtimes"]["onnxruntime"]["after"]
    assert ort["runtime"] == "onnxruntime" and any("run real int8" in n for n in result["notes"])

    reloaded = _cli("evaluate", "--model", spec, "--weights", str(saved), "--reference", spec, "--data", data)
    assert reloaded["agreement"] == result["after"]["agreement"] and "notes" not in reloaded
    alone = _cli("evaluate", "--model", spec, "--weights", str(saved), "--data", data)
    assert alone["agreement"] == 1.0 and "--reference" in alone["notes"][0]  # compared with itself, and said


@pytest.mark.slow
def test_cli_autoencoder_without_labels(tmp_path):
    """zoo:digits-autoencoder on random unlabelled images: PSNR throughout; the int8 ONNX model saved by
    compress scores, reloaded against the original, what compress reported."""
    spec = "zoo:digits-autoencoder"
    data = _write_inputs(_shapes({"x": (1, 16, 16)})(SAMPLES), tmp_path / "images.safetensors")
    swept = _cli("sensitivity", "--model", spec, "--data", data, "--kind", "structured", "--ratios", "0.5")
    assert swept["metric"] == {"name": "psnr", "direction": "higher", "value": PSNR_CAP_DB}
    saved = tmp_path / "small.onnx"
    result = _cli("compress", "--model", spec, "--data", data, "--plan", _plan_file(tmp_path, PLAN), "--runtime",
                  "onnxruntime", "--rounds", "1", "--batch-size", "4", "--save", str(saved))  # fmt: skip
    assert result["metric"]["name"] == "psnr" and result["after"]["runtime"] == "onnxruntime"
    assert result["after"]["params"] == _torch_pruning(
        load_model(spec), torch.zeros(2, 1, 16, 16), ("decoder.5",)
    )
    reloaded = _cli("evaluate", "--model", str(saved), "--reference", spec, "--data", data)
    assert reloaded["psnr"] == pytest.approx(result["after"]["psnr"], rel=1e-6)


@pytest.mark.slow
def test_cli_hugging_face_bert(tmp_path):
    """A tiny BERT through `hf:`: summary from its config, a sweep of its heads, half of them pruned with
    int8 on ONNX Runtime, the safe file reloaded with --model hf:DIR --weights FILE."""
    case = hf_case(tmp_path, "bert")
    plan, queries = head_plan(load_model(case.spec))
    summary = _cli("summary", "--model", case.spec)
    assert [f["name"] for f in summary["input_shape"]] == ["input_ids", "attention_mask"]
    data = _write_inputs(case.inputs(SAMPLES), tmp_path / "text.safetensors")
    swept = _cli("sensitivity", "--model", case.spec, "--data", data, "--kind", "structured", "--ratios",
                 "0.5", "--layers", ",".join(queries))  # fmt: skip
    assert sorted(swept["layers"]) == sorted(queries)
    saved = tmp_path / "small.pruned.safetensors"
    result = _cli("compress", "--model", case.spec, "--data", data, "--plan", _plan_file(tmp_path, plan),
                  "--runtime", "eager,onnxruntime", "--no-real-int8", "--rounds", "1", "--batch-size", "4",
                  "--save", str(saved))  # fmt: skip
    assert result["after"]["params"] == case.reference
    assert result["runtimes"]["onnxruntime"]["after"]["runtime"] == "onnxruntime"
    reloaded = _cli("evaluate", "--model", case.spec, "--weights", str(saved), "--reference", case.spec,
                    "--data", data)  # fmt: skip
    assert reloaded["agreement"] == result["after"]["agreement"]


@pytest.mark.parametrize("spec", ["zoo:digits-vit", "tests.e2e_models:FusedQKVViT"])
def test_a_fused_qkv_loses_whole_heads(spec):
    """timm's layout: one `qkv` Linear whose outputs are the queries, keys and values one after the other.
    A unit is head h in each of the three sections (by hand: s x 32 + 8h + j), the output projection loses
    that head's 8 inputs, the module's head count follows, and zeroing the head equals removing it."""
    model = load_model(spec)
    x = torch.randn(2, *(model.patch.in_channels, 16, 16), generator=torch.Generator().manual_seed(0))
    groups = find_groups(model, x)
    heads = [g for g in groups if g.name.endswith("qkv")]
    assert heads and all(g.channels == 4 and not g.approximate for g in heads)
    for g in heads:
        assert [sorted(u) for u in g.units] == [
            sorted(s * 32 + 8 * h + j for s in range(3) for j in range(8)) for h in range(4)
        ]
    group = heads[0]
    zeroed = copy.deepcopy(model)
    group.zero_channels(zeroed, [1, 2])
    removed = remove_channels(copy.deepcopy(model), x, groups, {group.name: [1, 2]})
    attention = removed.get_submodule(group.name.rsplit(".", 1)[0] if "." in group.name else "")
    assert attention.num_heads == 2 and attention.qkv.out_features == 48 and attention.proj.in_features == 16
    y = torch.randn(3, *x.shape[1:])
    with torch.no_grad():
        torch.testing.assert_close(removed(y), zeroed(y), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("spec", "layers", "why"),
    [
        ("tests.pattern_models:ConvTransposeDecoder", ["up2"], "output channels of 'up2' are a model output"),
        (
            "tests.pattern_models:TupleOutput",
            ["embed", "hidden"],
            "output channels of 'embed' are a model output",
        ),
        ("tests.reach_models:build_two_inputs", ["head.2"], "'head.2' is the final classifier"),
    ],
)
def test_a_plan_pruning_an_output_layer_is_refused_and_the_default_passes_it_by(spec, layers, why, tmp_path):
    model = load_model(spec)
    case = next(c for c in CASES.values() if c.spec == spec)
    data = load_data(_write_inputs(case.inputs(4), tmp_path / "x.safetensors"), None, positional_names(model))
    fast = {"latency_rounds": 1, "runs_per_round": 1, "warmup": 0, "batch_size": 2}
    plan = {"layers": {name: {"prune": 0.5} for name in layers}}
    with pytest.raises(WorkbenchError, match=why) as refused:
        compress(model, plan, data, **fast)
    assert "\n" not in str(refused.value) and "hidden" not in str(refused.value)  # only the output layers
    unstructured = {"layers": {name: {"prune": 0.5, "structured": False} for name in layers}}
    assert compress(model, unstructured, data, **fast).after.params == _params(model)  # allowed: zeroes only
    pruned = compress(model, {"default": {"prune": 0.5}}, data, **fast).float_model
    for name in case.kept:  # the default passes every output layer by: its outputs stay
        layers = (pruned.get_submodule(name), model.get_submodule(name))
        width = [getattr(m, "out_features", getattr(m, "out_channels", None)) for m in layers]
        assert width[0] == width[1]


def test_evaluate_against_a_reference_that_does_not_match_is_one_line():
    done = run_cli("evaluate", "--model", "zoo:digits-cnn", "--reference", "zoo:digits-autoencoder", "--metric",
                   "psnr", "--no-record")  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "--reference zoo:digits-autoencoder gives" in done.stderr
