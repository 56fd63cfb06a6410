"""Data specs (docs/contract.md section 2) -> an in-memory `Dataset` of tensors.

Every split fits in memory for the data sizes this workbench is meant for (thousands of samples); that
keeps evaluation, calibration and the sensitivity cache simple and deterministic.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from analysis.data.checks import check_split
from analysis.data.dataset import IMAGE_SUFFIXES, Dataset
from analysis.data.dataset import resize_images as _resize
from analysis.errors import WorkbenchError, first_line
from analysis.limits import check_archive
from analysis.model.inputs import InputBatch, spec_of

DEFAULT_MAX_SAMPLES = 2048  # the most samples a data-driven criterion or calibration pass reads

DIGITS_INPUT_SHAPE = (1, 16, 16)
DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 0.2


def load_digits(input_shape: tuple[int, ...] | None = None) -> Dataset:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], resized, with a fixed seeded 80/20 split."""
    from sklearn.datasets import load_digits as sk_load_digits

    shape = tuple(input_shape) if input_shape else DIGITS_INPUT_SHAPE
    bunch = sk_load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    if len(shape) == 3:
        images = _resize(images, shape)
    elif len(shape) == 1:
        images = images.reshape(len(images), -1)
        if shape[0] != images.shape[1]:
            raise WorkbenchError(
                f"digits has 64 features per sample, the model wants {shape[0]}: "
                "use --input-shape with 64 features or an image shape like 1,16,16"
            )
    else:
        raise WorkbenchError(f"digits cannot be shaped as {shape}: give C,H,W or a feature count")
    generator = torch.Generator().manual_seed(DIGITS_SEED)
    order = torch.randperm(len(images), generator=generator)
    n_test = int(round(len(images) * DIGITS_TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", images[test], labels[test], images[train], labels[train], 10)


def _load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise WorkbenchError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from analysis.data.stream import mmap_safetensors  # memory-mapped: larger-than-RAM files work

            return mmap_safetensors(path)
        if suffix == ".npz":
            check_archive(path, what=str(path))  # sized by what it unpacks to, before unpacking
            with np.load(path, allow_pickle=False) as npz:
                return {k: torch.from_numpy(npz[k]) for k in npz.files}
        if suffix in {".pt", ".pth"}:
            if zipfile.is_zipfile(path):
                check_archive(path, what=str(path))
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict):
                raise WorkbenchError(f"{path} must hold a dict of tensors ('x', optional 'y')")
            return {k: torch.as_tensor(v) for k, v in obj.items()}
    except WorkbenchError:
        raise
    except Exception as exc:  # the file's own parser says what broke; keep it to one line
        raise WorkbenchError(f"cannot read {path}: {first_line(exc)}") from exc
    raise WorkbenchError(f"unknown data file type {suffix!r}: use .pt, .safetensors or .npz")


def load_tensors(path: str | Path, input_names: Sequence[str] = ()) -> Dataset:
    """`tensors:<file>`: the inputs and optional labels `y` (N integers), optional training split.

    A single-input model's samples are `x` (N x ..., float; integer pixels are converted), as always. A
    model with several inputs, or inputs passed by name, has one array per input named after `forward`'s
    parameter (`input_ids`, `attention_mask`; integer ids stay integers), ordered as `input_names` (forward's
    parameters) where given. Training split: `x_train` (`<name>_train`) and `y_train`. Without `y` the
    data is unlabelled: metrics compare with the original model's outputs.
    """
    path = Path(path)
    arrays = _load_tensor_file(path)
    names = [k for k in arrays if k not in ("y", "y_train") and not k.endswith("_train")]
    if not names:
        raise WorkbenchError(
            f"{path} has no inputs: it needs 'x' (N x ...) for a single-input model, or one array per input "
            "named after forward's parameters, and optionally labels 'y' (N)"
        )
    order = {n: i for i, n in enumerate(input_names)}
    names.sort(key=lambda n: order.get(n, len(order)))
    train_names = [f"{n}_train" for n in names]
    has_train = any(t in arrays for t in train_names)
    if has_train and not all(t in arrays for t in train_names):
        missing = next(t for t in train_names if t not in arrays)
        raise WorkbenchError(
            f"{path}: give a training array for every input ({missing!r} is missing), or none"
        )
    if has_train and ("y" in arrays) != ("y_train" in arrays):
        raise WorkbenchError(f"{path}: give both 'x_train' and 'y_train', or neither")
    if "y_train" in arrays and not has_train:
        raise WorkbenchError(f"{path}: 'y_train' needs training inputs ('x_train')")
    x = _inputs(arrays, names, "", path)
    x_train = _inputs(arrays, names, "_train", path) if has_train else x
    y = arrays.get("y")
    y_train = arrays.get("y_train") if has_train else y
    check_split(x, y, str(path))
    check_split(x_train, y_train, str(path), ("x_train", "y_train"))
    if spec_of(x_train) != spec_of(x):
        raise WorkbenchError(f"{path}: 'x_train' samples must have the shape of 'x' samples")
    if y is None:
        return Dataset(f"tensors:{path}", x, None, x_train, None, 0, has_train)
    num_classes = int(max(y.max().item(), y_train.max().item())) + 1
    return Dataset(f"tensors:{path}", x, y.long(), x_train, y_train.long(), num_classes, has_train)


def _inputs(arrays: dict[str, torch.Tensor], names: list[str], suffix: str, path: Path):
    """The file's inputs: `x` alone as one float tensor, else an `InputBatch` by name."""
    if names == ["x"]:
        return _as_float(arrays["x" + suffix], path, "x" + suffix)
    return InputBatch({n: _keep_dtype(arrays[n + suffix]) for n in names})


def _keep_dtype(t: torch.Tensor) -> torch.Tensor:
    """Named inputs keep integer dtypes (token ids, masks); float64 becomes float32."""
    return t.float() if t.dtype == torch.float64 else t


def _as_float(t: torch.Tensor, path: Path, key: str) -> torch.Tensor:
    """Float32 inputs. 8-bit pixels are refused rather than guessed at: the model may expect 0..1, 0..255 or
    normalized values, and passing 0..255 unscaled silently wrecks the accuracy."""
    if t.dtype.is_floating_point:
        return t.float()
    if t.dtype in (torch.uint8, torch.int8):
        raise WorkbenchError(
            f"{path}: {key!r} holds {str(t.dtype).removeprefix('torch.')} values (8-bit pixels?): store float32 "
            f"inputs scaled the way the model expects, e.g. x.astype('float32') / 255"
        )
    if t.dtype in (torch.int16, torch.int32, torch.int64):
        return t.float()
    raise WorkbenchError(f"{path}: {key!r} must be floating point, got {t.dtype}")


def load_imagefolder(root: str | Path, input_shape: tuple[int, ...] | None = None) -> Dataset:
    """`imagefolder:<dir>`: one sub-folder per class; a seeded 80/20 split into train and evaluation."""
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise WorkbenchError(f"image folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise WorkbenchError(f"{root} has no class sub-folders: put each class's images in its own folder")
    c, h, w = tuple(input_shape) if input_shape and len(input_shape) == 3 else (3, 32, 32)
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(file) as img:
                img = img.convert("L" if c == 1 else "RGB").resize((w, h))
                arr = np.asarray(img, dtype=np.float32) / 255.0
            t = torch.from_numpy(arr)
            t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
            images.append(_resize(t.unsqueeze(0), (c, h, w))[0])
            labels.append(label)
    if not images:
        raise WorkbenchError(f"{root} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    x, y = torch.stack(images), torch.tensor(labels)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(DIGITS_SEED))
    n_test = max(1, int(round(len(x) * 0.2)))
    test, train = order[:n_test], order[n_test:]
    if len(train) == 0:
        train = test
    return Dataset(f"imagefolder:{root}", x[test], y[test], x[train], y[train], len(classes))


def load_data(spec: str = "digits", input_shape=None, input_names: Sequence[str] = ()) -> Dataset:
    """Resolve a data spec. `input_shape` (C, H, W) resizes image data to what the model takes (an
    `InputSpec` of several inputs resizes nothing); `input_names` orders a `tensors:` file's inputs."""
    from analysis.model.inputs import InputSpec

    spec = spec.strip()
    if isinstance(input_shape, InputSpec):
        input_shape = input_shape.shape if input_shape.form == "tensor" else None
    if spec == "digits":
        return load_digits(input_shape)
    if spec.startswith("tensors:"):
        return load_tensors(spec.removeprefix("tensors:"), input_names)
    if spec.startswith("imagefolder:"):
        from analysis.data.stream import load_imagefolder_stream  # streamed; options in its docstring

        return load_imagefolder_stream(spec.removeprefix("imagefolder:"), input_shape)
    raise WorkbenchError(f"unknown data spec {spec!r}: use 'digits', 'tensors:<file>' or 'imagefolder:<dir>'")
