"""Cached downstream evaluation equals a plain copy-edit-evaluate loop, on awkward graphs too."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import Untraceable
from torch import nn

from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate
from analysis.fx import DownstreamRunner, Edit, downstream_nodes, trace_model


class InPlaceConcat(nn.Module):
    """Concatenation, `+=`, nn.ReLU(inplace=True), Tensor.relu_() and a functional relu: every way a
    suffix run could write into a cached activation."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 6, 3, padding=1)
        self.b = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(10)
        self.act = nn.ReLU(inplace=True)
        self.c = nn.Conv2d(10, 10, 3, padding=1)
        self.fc = nn.Linear(10, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(torch.cat([self.a(x), torch.relu(self.b(x))], dim=1)))
        z = self.c(y)
        z += y
        z = z.relu_()
        return self.fc(z.mean(dim=(2, 3)))


class Attention(nn.Module):
    """Rows of the image as tokens: Linear embedding, multi-head attention, LayerNorm, mean pool."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 24)
        self.attn = nn.MultiheadAttention(24, 4, batch_first=True)
        self.norm = nn.LayerNorm(24)
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x.flatten(1, 2))
        a, _ = self.attn(t, t, t, need_weights=False)
        return self.head(self.norm(t + a).mean(dim=1))


class ReadsAfterInPlace(nn.Module):
    """Reads `h` after F.relu(h, inplace=True) changed it: an out-of-place rewrite would change the numbers,
    so the runner must fall back to full evaluation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        y = nn.functional.relu(h, True)
        z = nn.functional.leaky_relu(h, 0.2) + y  # reads the rectified h
        return self.fc(z.mean(dim=(2, 3)))


def _self_labelled(model: nn.Module, n: int = 96, seed: int = 0) -> Dataset:
    """Random images labelled by the model itself: the baseline is 100% and every edit shows."""
    x = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model.eval()(x).argmax(dim=1)
    return Dataset("random", x, y, x, y, int(y.max()) + 1)


def _build(cls: type[nn.Module], seed: int = 0) -> nn.Module:
    """A seeded instance with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = cls()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _edits(model: nn.Module, layers: tuple[str, ...] | None = None) -> list[Edit]:
    """Halve, then zero, the weight of every Linear/Conv (or those in `layers`), one at a time."""
    edits = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and (layers is None or name in layers):
            for scale in (0.5, 0.0):

                def apply(model, name=name, scale=scale):
                    model.get_submodule(name).weight.mul_(scale)

                edits.append(Edit((name,), apply, key=(name, scale)))
    return edits


def _naive(model: nn.Module, data: Dataset, edits: list[Edit], batch_size: int = 40):
    out = []
    for edit in edits:
        edited = copy.deepcopy(model)
        with torch.no_grad():
            edit.apply(edited)
        out.append(evaluate(edited, data, batch_size=batch_size))
    return out


@pytest.fixture(scope="module")
def models(resnet):
    return {
        "resnet": resnet,
        "inplace-concat": _build(InPlaceConcat),
        "attention": _build(Attention),
        "untraceable": _build(lambda: Untraceable(classes=5)),
        "reads-after-inplace": _build(ReadsAfterInPlace),
    }


@pytest.mark.parametrize(
    "name", ["resnet", "inplace-concat", "attention", "untraceable", "reads-after-inplace"]
)
def test_runner_equals_copy_edit_evaluate(models, name):
    model = models[name]
    data = _self_labelled(model, n=48)
    # the resnet: a layer per stage, the strided shortcut and the classifier (the rest are alike)
    layers = ("conv1", "layer2.0.downsample.0", "fc") if name == "resnet" else None
    edits = _edits(model, layers)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = DownstreamRunner(model, data.x, data.y, batch_size=40)
    out = runner.evaluate(edits)
    reference = _naive(model, data, edits)
    assert out.baseline.accuracy == evaluate(model, data, batch_size=40).accuracy == 1.0
    for edit, got, want in zip(edits, out.results, reference, strict=True):
        assert got.accuracy == pytest.approx(want.accuracy, abs=1e-6), edit.key
        assert got.loss == pytest.approx(want.loss, abs=1e-6), edit.key
    assert any(r.accuracy < 1.0 for r in out.results)  # the edits did something
    for k, v in model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(v, before[k]), k
    if name == "untraceable":
        assert not runner.traced
        assert "torch.fx" in " ".join(out.notes)
    elif name == "reads-after-inplace":
        assert not runner.traced
        assert "after modifying it in place" in " ".join(out.notes)
    else:
        assert runner.traced


def test_cache_survives_repeated_edits(models):
    """The same edit evaluated three times gives the same numbers: suffix runs never write into the cache."""
    model = models["inplace-concat"]
    data = _self_labelled(model)
    edit = _edits(model)[1]  # zero conv `a`, whose output feeds the in-place ops
    out = DownstreamRunner(model, data.x, data.y).evaluate([edit, edit, edit])
    assert out.results[0] == out.results[1] == out.results[2]
    want = _naive(model, data, [edit], batch_size=256)[0]
    # the runner computes in channels-last layout (faster convolutions): equal up to float rounding
    assert out.results[0].accuracy == want.accuracy
    assert out.results[0].loss == pytest.approx(want.loss, abs=1e-6)


def test_cache_limit_shrinks_batches_with_a_note(models):
    model = models["resnet"]
    data = _self_labelled(model, n=24)
    edits = _edits(model, ("layer1.0.conv1", "layer3.0.conv1"))
    small = DownstreamRunner(model, data.x, data.y, max_cache_bytes=200_000).evaluate(edits)
    full = DownstreamRunner(model, data.x, data.y).evaluate(edits)
    assert any("chunks" in n for n in small.notes)
    for a, b in zip(small.results, full.results, strict=True):
        assert a.accuracy == pytest.approx(b.accuracy, abs=1e-6)
        assert a.loss == pytest.approx(b.loss, abs=1e-5)


def test_cache_size_counts_views_not_the_data_set_behind_them():
    """A single-layer model caches only its input. Batches are views of the data tensor: sizing the cache by
    that tensor's whole storage once made a small cache look huge and split batches for nothing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x, y = torch.randn(2000, 64), torch.randint(0, 10, (2000,))
    per_batch = 256 * 64 * 4  # the input batch is the only cached value
    edits = _edits(model, ("1",))
    out = DownstreamRunner(model, x, y, batch_size=256, max_cache_bytes=4 * per_batch).evaluate(edits)
    assert not any("chunks" in n for n in out.notes), out.notes


def test_downstream_of_a_late_layer_skips_early_ones(resnet):
    gm = trace_model(resnet)
    late = downstream_nodes(gm, ["layer3.0.conv1"])
    assert "fc" in late and "layer3_0_conv1" in late
    assert not any(n.startswith(("layer1", "layer2", "conv1", "bn1")) for n in late)
    assert downstream_nodes(gm, ["conv1"]) >= late  # the stem reaches everything the late layer does


def test_stop_callback_drops_edits(models):
    model = models["inplace-concat"]
    data = _self_labelled(model)
    edits = _edits(model)
    out = DownstreamRunner(model, data.x, data.y, batch_size=32).evaluate(edits, stop=lambda tally: [0, 2])
    assert out.results[0] is None and out.results[2] is None
    assert out.results[1] is not None and out.results[1].samples == len(data.x)


def test_replaced_parameter_is_restored(models):
    """An edit that swaps the Parameter object (rather than writing into it) is undone too."""
    model = models["inplace-concat"]
    data = _self_labelled(model)

    def swap(m):
        m.fc.weight = nn.Parameter(torch.zeros_like(m.fc.weight))

    halve_fc = _edits(model)[-2]
    runner = DownstreamRunner(model, data.x, data.y)
    out = runner.evaluate([Edit(("fc",), swap), halve_fc])
    assert out.results[0] == _naive(model, data, [Edit(("fc",), swap)], batch_size=256)[0]
    assert out.results[1] == _naive(model, data, [halve_fc], batch_size=256)[0]
    assert torch.equal(runner.model.fc.weight, model.fc.weight)


def test_unknown_module_is_a_one_line_error(models):
    model = models["inplace-concat"]
    data = _self_labelled(model)
    with pytest.raises(WorkbenchError, match="no layer named 'nope'") as info:
        DownstreamRunner(model, data.x, data.y).evaluate([Edit(("nope",), lambda m: None)])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["resnet", "inplace-concat"])
@pytest.mark.parametrize("limit", [None, 30_000])  # everything held for all batches / recomputed per chunk
def test_chunks_equal_the_plain_loop_and_stop_between_chunks(models, name, limit):
    """`evaluate_chunks` gives each chunk the plain loop's numbers whether the cached activations are kept
    for every batch or (over the limit) recomputed per chunk, and stops between chunks when asked; the
    caller's model keeps its memory layout and weights."""
    model = models[name]
    data = _self_labelled(model, n=64)
    edits = _edits(model)
    chunks = [edits[:2], edits[2:4], edits[4:]]
    reference = _naive(model, data, edits, batch_size=16)
    kwargs = {"batch_size": 16} | ({} if limit is None else {"max_cache_bytes": limit})
    runner = DownstreamRunner(model, data.x, data.y, **kwargs)
    outs = runner.evaluate_chunks(chunks)
    got = [r for out in outs for r in out.results]
    for edit, a, b in zip(edits, got, reference, strict=True):
        assert a.accuracy == pytest.approx(b.accuracy, abs=1e-6), edit.key
        assert a.loss == pytest.approx(b.loss, rel=1e-6, abs=1e-6), edit.key
    assert all(out.baseline.accuracy == evaluate(model, data).accuracy for out in outs)
    asked = []
    stopped = runner.evaluate_chunks(chunks, should_stop=lambda: asked.append(1) or len(asked) > 1)
    assert len(stopped) == 1 and stopped[0].results == outs[0].results
    assert all(p.is_contiguous() for p in runner.model.parameters())  # layout restored after the run
