"""Issue 15: devices, streaming image data with standard transforms, class-balanced caps, memory-mapped
tensors, and sweeps/rankings on a local Ray cluster."""

from __future__ import annotations

import collections
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from analysis import load_data, load_model, rank_channels, sensitivity_sweep
from analysis.data import Dataset, load_imagefolder
from analysis.data.stream import IMAGENET_MEAN, IMAGENET_STD, balanced_subset, parse_normalize
from analysis.devices import on_device, parse_dtype, resolve_device
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """3 classes x 12 RGB images of different sizes (some portrait, some landscape)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"class{c}").mkdir()
        for i in range(12):
            h, w = (20 + i, 28) if i % 2 else (26, 18 + i)
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            pixels[..., c] //= 3  # something a model can learn from
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i:02d}.png")
    return root


def _tiny_model(shape=(3, 16, 16), classes=3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(shape[0], 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * shape[1] * shape[2], classes),
    ).eval()


# ---- normalization and transforms ---------------------------------------------------------------------


def test_imagenet_preset_is_torchvisions_published_mean_and_std():
    # torchvision.transforms docs / its pretrained weights' transforms: these exact values.
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)
    assert parse_normalize("imagenet", 3) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert parse_normalize("none", 3) is None
    assert parse_normalize("0.5,0.5,0.5/0.25,0.25,0.25", 3) == ((0.5,) * 3, (0.25,) * 3)
    for bad in ("0.5,0.5/0.2,0.2", "0.5,0.5,0.5", "imagenette", "0.5/0"):
        with pytest.raises(WorkbenchError) as err:
            parse_normalize(bad, 3)
        assert "\n" not in str(err.value)


def _reference(path: Path, resize: int, crop: int, mean, std) -> torch.Tensor:
    """Resize shorter side (PIL bilinear), center crop by array slicing, normalize: torchvision's recipe."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        arr = np.asarray(img.resize(size, Image.BILINEAR), dtype=np.float64) / 255.0
    top, left = round((arr.shape[0] - crop) / 2), round((arr.shape[1] - crop) / 2)
    arr = arr[top : top + crop, left : left + crop]
    arr = (arr - np.array(mean)) / np.array(std)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float()


def test_resize_crop_normalize_match_a_plain_pil_numpy_loop(folder):
    data = load_data(f"imagefolder:{folder}?resize=20&crop=16&normalize=imagenet&test=1", (3, 16, 16))
    assert data.input_shape == (3, 16, 16)
    files = data.x.files
    got = data.x[:]
    want = torch.stack([_reference(Path(f), 20, 16, IMAGENET_MEAN, IMAGENET_STD) for f in files])
    assert got.shape == (36, 3, 16, 16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # streamed batches (2 DataLoader workers) give the same tensors in the same order
    streamed = load_data(
        f"imagefolder:{folder}?resize=20&crop=16&normalize=imagenet&test=1&workers=2", (3, 16, 16)
    )
    xs, ys = zip(*streamed.batches("test", batch_size=8), strict=True)
    torch.testing.assert_close(torch.cat(xs), want, atol=1e-5, rtol=0)
    assert torch.equal(torch.cat(ys), data.y)


def test_bad_imagefolder_options_are_one_line_errors(folder):
    for query in ("resize=20", "crop=12", "normalize=bogus", "colour=1", "limit=-3", "test=0"):
        with pytest.raises(WorkbenchError) as err:
            load_data(f"imagefolder:{folder}?{query}", (3, 16, 16))
        assert "\n" not in str(err.value), query


# ---- streaming equals in memory ---------------------------------------------------------------------------


def test_streaming_evaluation_equals_the_in_memory_loader(folder):
    shape = (3, 16, 16)
    memory = load_imagefolder(folder, shape)  # the pre-streaming loader: every image decoded up front
    stream = load_data(f"imagefolder:{folder}?workers=2", shape)
    assert not isinstance(stream.x, torch.Tensor)  # nothing decoded yet
    assert torch.equal(stream.y, memory.y) and torch.equal(stream.y_train, memory.y_train)
    model = _tiny_model(shape)
    for split in ("test", "train"):
        a = evaluate(model, memory, split=split, batch_size=5)
        b = evaluate(model, stream, split=split, batch_size=5)
        assert a == b
    # a reference loop over the in-memory tensors
    logits = model(memory.x_train)
    assert evaluate(model, stream, split="train").accuracy == pytest.approx(
        (logits.argmax(1) == memory.y_train).sum().item() / len(memory.y_train), abs=1e-12
    )
    # the sweep (which still materializes its samples) gives the same numbers from either
    assert (
        sensitivity_sweep(model, memory, ratios=[0.5]).layers
        == sensitivity_sweep(model, stream, ratios=[0.5]).layers
    )


# ---- class-balanced cap -----------------------------------------------------------------------------------


def test_balanced_subset_is_seeded_and_balanced():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 5 + [3] * 15)
    a = balanced_subset(labels, 40, seed=1)
    assert torch.equal(a, balanced_subset(labels, 40, seed=1))
    assert not torch.equal(a, balanced_subset(labels, 40, seed=2))
    assert len(set(a.tolist())) == 40
    counts = collections.Counter(labels[a].tolist())
    # class 2 has only 5: it gives all of them, the other 35 split as evenly as possible (12, 12, 11)
    assert counts[2] == 5 and sorted(counts[c] for c in (0, 1, 3)) == [11, 12, 12]
    for k in (4, 8, 12):  # every prefix is balanced too
        prefix = collections.Counter(labels[a[:k]].tolist())
        assert max(prefix.values()) - min(prefix.values()) <= 1 and len(prefix) == 4
    assert len(balanced_subset(labels, 1000)) == 100


def test_limit_option_takes_a_balanced_evaluation_subset(folder):
    data = load_data(f"imagefolder:{folder}?test=0.5&limit=6&train_limit=9", (3, 16, 16))
    assert len(data.x) == 6 and sorted(collections.Counter(data.y.tolist()).values()) == [2, 2, 2]
    assert len(data.x_train) == 9 and sorted(collections.Counter(data.y_train.tolist()).values()) == [3, 3, 3]
    again = load_data(f"imagefolder:{folder}?test=0.5&limit=6&train_limit=9", (3, 16, 16))
    assert data.x.files == again.x.files


# ---- memory-mapped tensors --------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_safetensors_data_is_memory_mapped(tmp_path):
    from safetensors.torch import load_file, save_file

    n = 4096  # 4096 x 3 x 32 x 32 float32 = 48 MiB
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 10
    path = tmp_path / "big.safetensors"
    save_file({"x": x, "y": y}, str(path))
    del x
    before = _rss_bytes()
    data = load_data(f"tensors:{path}")
    grown = _rss_bytes() - before
    assert grown < 16 * 2**20, f"loading grew RSS by {grown / 2**20:.1f} MiB: not memory-mapped"
    reference = load_file(str(path))
    assert torch.equal(data.x[100:200], reference["x"][100:200])
    assert torch.equal(data.y, reference["y"]) and data.num_classes == 10


# ---- devices ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_a_gpu_is_a_one_line_error():
    for text in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(WorkbenchError) as err:
            resolve_device(text)
        assert "\n" not in str(err.value) and "no CUDA GPU" in str(err.value)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(WorkbenchError):
        resolve_device("tpu")
    with pytest.raises(WorkbenchError) as err:
        evaluate(_tiny_model(), load_data("digits"), device="cuda")
    assert "\n" not in str(err.value)


def test_device_copy_leaves_the_cached_model_alone():
    model = load_model("zoo:digits-cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    work = on_device(model, "cpu", "bfloat16")
    assert work is not model and next(work.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert parse_dtype("fp16") == torch.float16
    data = load_data("digits")
    full, half = evaluate(model, data), evaluate(model, data, device="cpu", dtype="bfloat16")
    assert abs(full.accuracy - half.accuracy) < 0.03  # bfloat16 keeps the digits CNN's accuracy
    assert evaluate(model, data, device="cpu") == full


@gpu
@needs_cuda
def test_evaluation_and_latency_on_cuda_match_cpu():
    from analysis.latency import measure_latency

    model, data = load_model("zoo:digits-cnn"), load_data("digits")
    cpu, cuda = evaluate(model, data), evaluate(model, data, device="cuda")
    assert cuda.samples == cpu.samples and abs(cuda.accuracy - cpu.accuracy) <= 1 / cpu.samples
    assert cuda.loss == pytest.approx(cpu.loss, rel=1e-3)
    assert next(model.parameters()).device.type == "cpu"
    lat = measure_latency(model, data.input_shape, device="cuda", runs=5)
    assert lat.runs == 5 and lat.median_ms > 0


# ---- Ray ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from analysis.distributed import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()


class _Close(float):
    """A float that equals another within 1e-5 relative (float32 sums): Ray workers run torch with their own thread
    count, so a loss or a Taylor score summed in another order differs in the last bits; accuracies,
    channel orders and every other value must still be equal exactly. The oracle's score is the difference
    of two float32 losses near 0.02, whose rounding (about 1e-9) is large next to a score of 5e-6: an
    absolute 1e-8 covers it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, float) and math.isclose(self, other, rel_tol=1e-5, abs_tol=1e-8)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = float.__hash__


def _close(value):
    if isinstance(value, dict):
        return {k: _close(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_close(v) for v in value]
    return _Close(value) if isinstance(value, float) else value


def _comparable(d: dict) -> dict:
    d = dict(d)
    d.pop("seconds")
    d.pop("failed_layers", None)
    return _close(d)


def test_ray_sweeps_equal_the_single_process_sweeps(ray_cluster):
    from analysis.distributed import ray_sensitivity_sweep

    model, data = load_model("zoo:digits-resnet"), load_data("digits").subset(96)
    for kind in ("structured", "quant"):
        local = sensitivity_sweep(model, data, kind, ratios=[0.25, 0.75], bits=[3, 8])
        calls: list[tuple[int, int]] = []
        remote = ray_sensitivity_sweep(
            model,
            data,
            kind,
            ratios=[0.25, 0.75],
            bits=[3, 8],
            progress=lambda d, t, c=calls: c.append((d, t)),
        )
        assert _comparable(remote.to_dict()) == _comparable(local.to_dict())
        assert remote.failed_layers == {}
        assert calls[-1] == (len(local.layers), len(local.layers))
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_ray_lowrank_and_share_sweeps_equal_the_single_process_ones(ray_cluster):
    from analysis.distributed import ray_sensitivity_sweep

    model, data = load_model("zoo:digits-mlp"), load_data("digits").subset(96)
    for kind, options in (("lowrank", {"ratios": [0.5, 0.25]}), ("share", {"bits": [4, 2]})):
        local = sensitivity_sweep(model, data, kind, **options)
        remote = ray_sensitivity_sweep(model, data, kind, **options)
        # the same points, and for lowrank the same ranks and MACs/params saved per layer
        assert _comparable(remote.to_dict()) == _comparable(local.to_dict())


def test_ray_oracle_ranking_equals_the_single_process_ranking(ray_cluster):
    from analysis.distributed import ray_rank_channels

    model, data = load_model("zoo:digits-cnn"), load_data("digits").subset(64)
    local = rank_channels(model, data, criteria=["l1", "taylor"], max_samples=48)
    remote = ray_rank_channels(model, data, criteria=["l1", "taylor"], max_samples=48, layers_per_task=2)
    assert _comparable(remote.to_dict()) == _comparable(local.to_dict())


def test_killed_task_is_retried_and_a_failing_layer_is_reported(ray_cluster, tmp_path):
    from analysis.distributed import FaultPlan, ray_sensitivity_sweep

    model, data = load_model("zoo:digits-cnn"), load_data("digits").subset(64)
    local = sensitivity_sweep(model, data, "quant", bits=[4])
    names = list(local.layers)
    killed, broken = names[0], names[1]
    (tmp_path / "kill").mkdir()
    (tmp_path / "raise").mkdir()
    remote = ray_sensitivity_sweep(
        model,
        data,
        "quant",
        bits=[4],
        max_retries=2,
        fault=FaultPlan({killed: 1}, str(tmp_path / "kill"), "exit"),
    )
    assert remote.failed_layers == {}
    assert (tmp_path / "kill" / f"attempts-{killed}").read_text() == "2"  # died once, retried once
    assert _comparable(remote.to_dict()) == _comparable(local.to_dict())

    remote = ray_sensitivity_sweep(
        model, data, "quant", bits=[4], max_retries=1, fault=FaultPlan({broken: -1}, str(tmp_path / "raise"))
    )
    assert list(remote.failed_layers) == [broken] and "injected failure" in remote.failed_layers[broken]
    # its chunk (2 tasks by default here) failed twice (try + retry), then alone it failed twice more
    assert (tmp_path / "raise" / f"attempts-{broken}").read_text() == "4"
    assert list(remote.layers) == [n for n in names if n != broken]
    for n in remote.layers:
        assert _close(vars(remote.layers[n])) == _close(vars(local.layers[n]))
    assert any(broken in note and "failed on Ray" in note for note in remote.notes)


def test_local_path_does_not_import_ray():
    import subprocess
    import sys

    code = (
        "import sys, analysis, analysis.distributed, analysis.data.stream, analysis.devices;"
        "print('ray' in sys.modules)"
    )
    root = str(Path(__file__).resolve().parents[1])  # another test may have changed the working directory
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"


def test_in_memory_datasets_still_work_with_the_subclass():
    # StreamingDataset is a Dataset: code that type-checks for Dataset keeps working
    from analysis.data.stream import StreamingDataset

    assert issubclass(StreamingDataset, Dataset)
