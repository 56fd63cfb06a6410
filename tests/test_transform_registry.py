"""The transforms registry: a toy transform defined only here (one handler class, one registration) shows
up in the plan format, as a sensitivity sweep kind (the sweep, the CLI, the Sensitivity page, the HTML
report), in `compress` and as a Compress page column, with no other edit; each is checked against applying
the edit by hand on a copy."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from analysis.compression.compress import compress
from analysis.compression.plan import CompressionPlan
from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate
from analysis.sensitivity.kinds import get_sweep_kind, sweep_kinds
from analysis.sensitivity.sweep import sensitivity_sweep
from analysis.transforms.registry import Column, TransformHandler, register_transform, unregister_transform

ROOT = Path(__file__).resolve().parents[1]
FAST = {"latency_rounds": 1, "runs_per_round": 1, "warmup": 1}
SCALES = (0.5, 2.0)


class Scale(TransformHandler):
    """The toy transform: a layer's weight multiplied by a positive factor (its size unchanged)."""

    field = kind = "scale"
    sweep_values = SCALES
    sweep_label = "scale factor"
    column = Column("scale (1 = off)", "number", off=1.0, low=0.0, high=4.0, step=0.25, state_key="scale")

    def check(self, value, where):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise WorkbenchError(f"{where}: scale must be a positive number such as 0.5, got {value!r}")
        return float(value)

    def apply_weight(self, weight, value):
        return weight * value


@pytest.fixture
def scale():
    handler = register_transform(Scale)
    yield handler
    unregister_transform("scale")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 16, 12)
        self.out = nn.Linear(12, 3)

    def forward(self, x):
        return self.out(torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1))))


def _tiny() -> Tiny:
    torch.manual_seed(0)
    return Tiny().eval()


def _data(n: int = 64) -> Dataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, 4, 4, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return Dataset("synthetic", x, y, x, y, 3)


def _scaled(model: nn.Module, layer: str, factor: float) -> nn.Module:
    """The reference: a copy with `layer`'s weight multiplied by hand."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.get_submodule(layer).weight.mul_(factor)
    return out


def test_a_plan_takes_the_registered_field_and_its_one_line_error(scale):
    plan = CompressionPlan.from_dict({"layers": {"fc": {"scale": 0.5, "bits": 8}}})
    assert plan.settings_for("fc").scale == 0.5
    assert plan.settings_for("conv").scale is None
    assert plan.to_dict()["layers"]["fc"] == {"bits": 8, "scale": 0.5}
    assert CompressionPlan.from_json(plan.to_json()) == plan
    default = CompressionPlan.from_dict({"default": {"scale": 2}})
    assert default.settings_for("out").transforms == {"scale": 2.0}
    with pytest.raises(WorkbenchError) as bad:
        CompressionPlan.from_dict({"layers": {"fc": {"scale": -1}}})
    assert str(bad.value) == "layer 'fc': scale must be a positive number such as 0.5, got -1"
    with pytest.raises(WorkbenchError, match="rank and scale cannot go together"):
        CompressionPlan.from_dict({"layers": {"fc": {"scale": 2, "rank": 0.5}}})


def test_without_the_registration_the_field_and_kind_are_unknown():
    with pytest.raises(WorkbenchError, match="unknown key 'scale'"):
        CompressionPlan.from_dict({"layers": {"fc": {"scale": 0.5}}})
    with pytest.raises(WorkbenchError) as bad:
        sensitivity_sweep(_tiny(), _data(), kind="scale")
    assert "\n" not in str(bad.value) and "structured, unstructured, quant, lowrank, share" in str(bad.value)
    assert "scale" not in sweep_kinds()
    with pytest.raises(
        WorkbenchError, match=r"^unknown sensitivity kind 'scale': choose one of structured, "
    ):
        get_sweep_kind("scale")


def test_a_registered_field_or_kind_cannot_be_taken_twice(scale):
    with pytest.raises(WorkbenchError, match="already registered"):
        register_transform(Scale)
    with pytest.raises(WorkbenchError, match="already registered"):
        register_transform(type("Prune", (Scale,), {"field": "prune"}))


def test_the_sweep_kind_equals_a_plain_loop_applying_the_edit_by_hand(scale):
    model, data = _tiny(), _data()
    assert sweep_kinds()[-1] == "scale"
    result = sensitivity_sweep(model, data, kind="scale")
    assert list(result.layers) == ["conv", "fc", "out"]
    assert result.x_key == "ratios" and result.to_dict()["kind"] == "scale"
    for name, curve in result.layers.items():
        assert curve.values == SCALES
        for factor, acc, loss in zip(curve.values, curve.accuracy, curve.loss, strict=True):
            ref = evaluate(_scaled(model, name, factor), data)
            assert acc == pytest.approx(ref.accuracy, abs=1e-12)
            assert loss == pytest.approx(ref.loss, rel=1e-5)
    chosen = sensitivity_sweep(model, data, kind="scale", ratios=[3.0], layers=["fc"])
    assert list(chosen.layers) == ["fc"] and chosen.layers["fc"].values == (3.0,)
    with pytest.raises(WorkbenchError, match="scale must be a positive number"):
        sensitivity_sweep(model, data, kind="scale", ratios=[0.0])


def test_compress_applies_it_as_applying_it_by_hand(scale):
    model, data = _tiny(), _data()
    before = copy.deepcopy(model.state_dict())
    result = compress(model, {"layers": {"fc": {"scale": 0.5}}}, data, **FAST)
    expected = _scaled(model, "fc", 0.5)
    for key, value in expected.state_dict().items():
        assert torch.equal(result.float_model.state_dict()[key], value), key
    assert torch.equal(result.model(data.x), expected(data.x))
    assert result.transforms["layers"]["fc"]["transform"] == "scale"
    assert result.after.size_bytes == result.before.size_bytes
    assert result.after.accuracy == pytest.approx(evaluate(expected, data).accuracy, abs=1e-12)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the input is untouched


def test_compress_applies_it_after_quantization(scale):
    model, data = _tiny(), _data()
    result = compress(model, {"layers": {"fc": {"scale": 0.5, "bits": 8}}}, data, real_int8=False, **FAST)
    w = model.fc.weight.detach()
    # Symmetric per-output-channel 8-bit fake quantization written out by hand, then the scale.
    step = w.abs().amax(dim=1, keepdim=True) / 127
    expected = torch.round(w / step).clamp(-127, 127) * step * 0.5
    assert torch.allclose(result.float_model.fc.weight, expected, atol=1e-7)


def test_the_compress_page_shows_its_column_and_checks_its_value(scale, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/compress.py").run()
    assert not at.exception and not at.error
    inputs = {w.key: w for w in at.number_input}
    layers = [k.split("::", 1)[1] for k in inputs if k.startswith("prune::")] or [
        k.split("::", 1)[1] for k in (w.key for w in at.slider) if k.startswith("prune::")
    ]
    assert layers
    for layer in layers:
        assert inputs[f"scale::{layer}"].label == "scale (1 = off)"
        assert inputs[f"scale::{layer}"].value == 1.0
    # The value reaches the plan the page checks: with a rank on the same layer it is refused, one line.
    inputs[f"scale::{layers[0]}"].set_value(2.0)
    inputs[f"rank::{layers[0]}"].set_value(0.5)
    at.run()
    assert any("rank and scale cannot go together" in e.value for e in at.error)
    assert [b for b in at.button if b.label == "Apply"][0].disabled


def test_the_store_diff_and_the_preview_read_the_registry(scale):
    from analysis.app_support.preview import preview_transforms
    from analysis.store.compare import plan_diff

    # A key no handler knows ("alpha", from an older plan) follows the registered ones, sorted.
    plans = {
        "a": {"layers": {"fc": {"alpha": 1, "scale": 2.0, "bits": 8}}},
        "b": {"layers": {"fc": {"bits": 8}}},
    }
    frame = plan_diff(plans)
    assert list(frame.columns)[:3] == ["bits [a]", "scale [a]", "alpha [a]"]
    assert frame.loc["fc", "scale [a]"] == 2.0 and bool(frame.loc["fc", "differs"])
    # Only what changes MACs or params is applied to count the preview's cost: the rank, not the scale.
    layer_plan = {"fc": {"scale": 2.0, "rank": 0.5}, "out": {"scale": 0.5}, "conv": {"rank": 0.25}}
    assert preview_transforms(layer_plan, refused={"conv": "refused"}) == {"fc": {"rank": 0.5}}


# --- its sweep kind, everywhere a kind is read ----------------------------------------------------------


def test_its_sweep_kind_is_described_from_the_handler(scale):
    kind = get_sweep_kind("scale")
    assert (kind.handler, kind.axis, kind.column, kind.x_key) == (scale, "scale factor", "scale", "ratios")
    assert kind.defaults == SCALES and kind.parameter == "ratios" and not kind.bits
    assert kind.description.startswith("The toy transform: a layer's weight multiplied")


def test_the_cli_offers_the_kind_and_sweeps_it_as_by_hand(scale, tmp_path, capsys):
    from analysis import load_data, load_model
    from analysis.cli.loading import balanced
    from analysis.cli.main import build_parser, main
    from analysis.cli.sensitivity import report_kinds, swept_values

    parser = build_parser()
    assert report_kinds(parser.parse_args(["report", "--kinds", "quant,scale"])) == ["quant", "scale"]
    assert swept_values(parser.parse_args(["sensitivity", "--kind", "scale", "--ratios", "3"])) == (
        [3.0],
        None,
    )
    with pytest.raises(
        WorkbenchError, match=r"^--kinds: unknown sensitivity kind 'bogus': choose one of .*, share, scale$"
    ):
        report_kinds(parser.parse_args(["report", "--kinds", "bogus"]))
    out = tmp_path / "sens.json"
    args = ["sensitivity", "--model", "zoo:digits-mlp", "--kind", "scale", "--limit", "40", "--no-record"]
    assert main([*args, "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["kind"] == "scale"
    model, data = load_model("zoo:digits-mlp"), balanced(load_data("digits"), 40)
    for name, entry in payload["layers"].items():
        assert entry["ratios"] == list(SCALES)
        for factor, acc in zip(entry["ratios"], entry["accuracy"], strict=True):
            assert acc == pytest.approx(evaluate(_scaled(model, name, factor), data).accuracy, abs=1e-12)
    capsys.readouterr()
    assert main(["sensitivity", "--model", "zoo:digits-mlp", "--kind", "bogus", "--no-record"]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'bogus'" in err and err.endswith("lowrank, share, scale")


def test_the_sensitivity_page_offers_the_kind_and_labels_its_axis(scale, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/sensitivity.py").run()
    assert not at.exception and not at.error
    assert "scale" in at.radio(key="sens_kind").options
    assert at.text_input(key="sens_ratios").label == "Ratios (pruning, scale)"
    at.radio(key="sens_kind").set_value("scale")
    at.text_input(key="sens_ratios").set_value("0.5, 2")  # the field it reads (its label names it)
    at.multiselect(key="sens_layers").set_value([at.multiselect(key="sens_layers").options[-1]])
    next(b for b in at.get("form_submit_button") if b.label == "Run sweep").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    result = at.session_state["_result_sensitivity"]["result"]
    assert result.kind == "scale" and next(iter(result.layers.values())).values == SCALES
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert figures and figures[0]["layout"]["xaxis"]["title"]["text"] == "scale factor"
    assert "max scale factor @ 1 pt" in at.dataframe[0].value.columns


def test_the_html_report_section_shows_the_sweeps_points(scale, tmp_path):
    import re

    from analysis.report.html import build_report

    model, data = _tiny(), _data()
    result = sensitivity_sweep(model, data, kind="scale", ratios=[0.5, 2.0, 3.0])
    page = build_report(model, data, tmp_path / "r.html", sensitivity=result).read_text()
    assert "<h2>Sensitivity: scale</h2>" in page
    assert "Each layer's scale is set to each swept value" in page
    section = page.split("<h2>Sensitivity: scale</h2>")[1]
    assert "<th>max scale factor @ 1 pt</th>" in section
    rows = re.findall(r"<tr>\s*<td>(\w+)</td>\s*<td>([^<]*)</td>", section)
    assert [name for name, _ in rows[:3]] == ["conv", "fc", "out"]
    # The largest factor up to which every point stays within 1 point, from the sweep's numbers by hand.
    for name, shown in rows[:3]:
        curve = result.layers[name]
        safe = 0.0
        for factor, acc in zip(curve.values, curve.accuracy, strict=True):
            if result.baseline_accuracy - acc > 0.01 + 1e-9:
                break
            safe = factor
        assert float(shown) == pytest.approx(safe)


class LinearScale(Scale):
    """The toy again, for Linear layers only: `applies_to` and `needs` say so."""

    field = kind = "lscale"
    needs = "a Linear layer"

    def applies_to(self, module):
        return type(module) is nn.Linear


def test_a_default_reaches_only_the_layers_it_applies_to_and_a_named_one_is_refused():
    register_transform(LinearScale)
    try:
        model, data = _tiny(), _data()
        result = compress(model, {"default": {"lscale": 0.5}}, data, **FAST)
        expected = _scaled(_scaled(model, "fc", 0.5), "out", 0.5)  # every Linear by hand, the conv untouched
        for key, value in expected.state_dict().items():
            assert torch.equal(result.float_model.state_dict()[key], value), key
        with pytest.raises(WorkbenchError) as bad:
            compress(model, {"layers": {"conv": {"lscale": 0.5}}}, data, **FAST)
        assert str(bad.value) == "layer 'conv': lscale needs a Linear layer"
    finally:
        unregister_transform("lscale")


def test_rank_named_on_a_layer_svd_cannot_factor_is_one_line():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Flatten()
    )
    model.append(nn.Linear(64, 3))
    with pytest.raises(WorkbenchError) as bad:
        compress(model.eval(), {"layers": {"1": {"rank": 0.5}}}, _data(), **FAST)
    assert str(bad.value) == "layer '1': rank needs a Linear or groups=1 Conv2d layer"
