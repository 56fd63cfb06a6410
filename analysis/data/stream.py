"""Data at size: `imagefolder:` streamed through a DataLoader with standard evaluation transforms, seeded
class-balanced sample caps, and `tensors:` safetensors files memory-mapped instead of read into RAM.

`imagefolder:<dir>?resize=256&crop=224&normalize=imagenet` (docs/contract.md section 7). Options:

| option | meaning |
|---|---|
| `resize=N` | resize the shorter side to N pixels (bilinear, aspect kept), as torchvision's `Resize(N)` |
| `crop=N` or `crop=HxW` | center crop (zero padding where the image is smaller), as `CenterCrop` |
| `normalize=imagenet` | subtract mean, divide by std per channel; `imagenet` is torchvision's published (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225); `none` (default); or explicit `m1,m2,m3/s1,s2,s3` |
| `limit=N` | evaluation split capped at N samples: a fixed, seeded, class-balanced subset (`balanced_subset`) |
| `train_limit=N` | the same for the training (calibration, fine-tuning) split |
| `test=F` | fraction of the images held out for evaluation (default 0.2; `test=1` evaluates on every image) |
| `seed=S` | seed of the split and of the caps (default 0) |
| `workers=N` | DataLoader worker processes (default: 0 under 256 images, else min(4, CPUs - 1); at most the CPU count) |

Without `resize`/`crop` every image is resized to the model's input H x W (the in-memory loader's rule,
`analysis.data.load_imagefolder`), so a plain `imagefolder:<dir>` gives the same numbers as before.

Nothing decodes the whole folder: the dataset holds file paths and labels; `batches()` streams through a
`torch.utils.data.DataLoader` (pinned memory when CUDA is available), and `x`/`x_train` are `LazyImages`
views that decode only the samples indexed. Callers that index a whole split (`x[:limit]`) still
materialize what they index: the sensitivity sweep's and the oracle's `DownstreamRunner` (the evaluation /
calibration samples it caches), `finetune` (one batch at a time, fine) and the zoo's trainer.

One module: the streaming dataset, its image transform and the file listing are one data path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import torch

from analysis.data.dataset import IMAGE_SUFFIXES, Dataset
from analysis.data.dataset import resize_images as _resize
from analysis.data.mmap import mmap_safetensors  # noqa: F401  (re-exported: tensors: files)
from analysis.errors import WorkbenchError, first_line
from analysis.limits import check_workers

# torchvision.transforms' documented ImageNet statistics (the values its pretrained weights expect).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "none": None,
}
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SEED = 0
_OPTIONS = ("resize", "crop", "normalize", "limit", "train_limit", "test", "seed", "workers")


def balanced_subset(labels: Sequence[int] | torch.Tensor, n: int, seed: int = DEFAULT_SEED) -> torch.Tensor:
    """Indices of a fixed, seeded, class-balanced subset of `n` samples (all of them if `n` >= len).

    Each class's samples are shuffled with `seed`, then classes are taken round-robin (in label order), so
    class counts differ by at most one unless a class runs out (its share then goes to the others), and
    every prefix of the result is balanced too. Returned in that round-robin order (int64).
    """
    labels = torch.as_tensor(labels).long().flatten()
    if n < 0:
        raise WorkbenchError(f"a sample cap must be a non-negative whole number, got {n}")
    generator = torch.Generator().manual_seed(int(seed))
    queues = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        queues.append(members[torch.randperm(len(members), generator=generator)])
    picked: list[int] = []
    depth = 0
    n = min(n, len(labels))
    while len(picked) < n:
        for q in queues:
            if depth < len(q):
                picked.append(int(q[depth]))
                if len(picked) == n:
                    break
        depth += 1
    return torch.tensor(picked, dtype=torch.long)


def parse_normalize(text: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """`imagenet`, `none` or `m1,m2,m3/s1,s2,s3` (one value, or one per channel) -> (mean, std) or None."""
    key = text.strip().lower()
    if key in NORMALIZE_PRESETS:
        preset = NORMALIZE_PRESETS[key]
        if preset is not None and len(preset[0]) != channels:
            raise WorkbenchError(
                f"normalize={key} has {len(preset[0])} channels, the model takes {channels}: "
                "give explicit mean/std like normalize=0.5/0.25"
            )
        return preset
    mean_text, slash, std_text = key.partition("/")
    try:
        mean = tuple(float(v) for v in mean_text.split(",") if v.strip())
        std = tuple(float(v) for v in std_text.split(",") if v.strip())
    except ValueError:
        mean, std = (), ()
    if not slash or not mean or len(mean) != len(std) or len(mean) not in (1, channels):
        counts = "1 value each" if channels == 1 else f"1 or {channels} values each"
        example = (
            "0.5/0.25"
            if channels == 1
            else ",".join(["0.5"] * channels) + "/" + ",".join(["0.25"] * channels)
        )
        raise WorkbenchError(
            f"cannot read normalize={text!r}: use imagenet, none, or mean/std with {counts}, like {example}"
        )
    if any(s <= 0 for s in std):
        raise WorkbenchError(f"normalize={text!r}: every std must be positive")
    return mean, std


@dataclass(frozen=True)
class ImageTransform:
    """Decode one image file into a float32 C x H x W tensor in [0, 1], then normalize.

    `size` (H, W) is the plain resize used without `resize`/`crop`; otherwise the shorter side goes to
    `resize` and the center `crop` (H, W) is cut, as torchvision's Resize + CenterCrop on PIL images.
    """

    channels: int
    size: tuple[int, int]
    resize: int | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def output_hw(self) -> tuple[int, int]:
        return self.crop if self.crop is not None else self.size

    def __call__(self, path: str | Path) -> torch.Tensor:
        from PIL import Image

        try:
            return self._decode(path)
        except WorkbenchError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            # PIL's own message ("Truncated File Read") does not say which of thousands of files broke.
            raise WorkbenchError(f"cannot read image {path}: {first_line(exc)}") from exc

    def _decode(self, path: str | Path) -> torch.Tensor:
        from PIL import Image

        c = self.channels
        with Image.open(path) as img:
            img = img.convert("L" if c == 1 else "RGB")
            if self.resize is None and self.crop is None:
                h, w = self.size
                img = img.resize((w, h))  # the in-memory loader's call, for identical numbers
            else:
                if self.resize is not None:
                    img = img.resize(_shorter_side(img.size, self.resize), Image.Resampling.BILINEAR)
                if self.crop is not None:
                    img = _center_crop(img, self.crop)
            arr = np.asarray(img, dtype=np.float32) / 255.0
        t = torch.from_numpy(arr)
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        if t.shape[1:] != self.output_hw:
            raise WorkbenchError(
                f"{path} gives a {t.shape[1]}x{t.shape[2]} image after resize={self.resize}: add crop=N "
                "so every image has the same size"
            )
        t = _resize(t.unsqueeze(0), (c, *self.output_hw))[0]
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
            t = (t - mean) / std
        return t.contiguous()


def _shorter_side(size: tuple[int, int], target: int) -> tuple[int, int]:
    """(W, H) with the shorter side `target` and the longer scaled, truncated as torchvision does."""
    w, h = size
    if w <= h:
        return target, int(target * h / w)
    return int(target * w / h), target


def _center_crop(img, crop: tuple[int, int]):
    """Center crop to (H, W); PIL fills the area outside a smaller image with zeros."""
    ch, cw = crop
    w, h = img.size
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return img.crop((left, top, left + cw, top + ch))


class LazyImages:
    """A read-only, tensor-like N x C x H x W view of image files: `len`, `shape`, `dtype` and indexing
    (int, slice, index list or tensor) decode only the images asked for. `materialize()` decodes all."""

    ndim = 4
    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(self, files: Sequence[str], transform: ImageTransform) -> None:
        self.files = list(files)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), self.transform.channels, *self.transform.output_hw))

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def float(self) -> LazyImages:
        return self

    def take(self, indices: Sequence[int] | torch.Tensor) -> LazyImages:
        """A lazy view of the samples at `indices` (nothing is decoded)."""
        return LazyImages([self.files[int(i)] for i in indices], self.transform)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int | np.integer):
            return self.transform(self.files[int(index)])
        if isinstance(index, slice):
            positions = range(*index.indices(len(self.files)))
        elif isinstance(index, torch.Tensor | np.ndarray | list | tuple):
            positions = [int(i) for i in torch.as_tensor(index).flatten()]
        else:
            raise TypeError(f"LazyImages cannot be indexed by {type(index).__name__}")
        if len(positions) == 0:
            return torch.empty((0, *self.shape[1:]))
        return torch.stack([self.transform(self.files[i]) for i in positions])

    def materialize(self) -> torch.Tensor:
        """Every image decoded into one tensor (for small folders only)."""
        return self[:]

    def __getattr__(self, name: str):
        # Any other tensor method (x.mean(...), x.numpy()) works on the decoded split, as code written for
        # in-memory data expects; it decodes every image, so it is for small folders only.
        if name.startswith("_") or not hasattr(torch.Tensor, name):
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    def __repr__(self) -> str:
        return f"LazyImages({len(self.files)} files, shape={tuple(self.shape)})"


class _FilesDataset(torch.utils.data.Dataset):
    def __init__(self, images: LazyImages, labels: torch.Tensor | None, n: int) -> None:
        self.images, self.labels, self.n = images, labels, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        return self.images[i] if self.labels is None else (self.images[i], self.labels[i])


@dataclass(frozen=True)
class StreamingDataset(Dataset):
    """A `Dataset` whose `x`/`x_train` are `LazyImages`: `batches()` streams through a DataLoader with
    `num_workers` processes (pinned memory when CUDA is available); labels are in memory."""

    num_workers: int = 0

    def batches(
        self, split: str = "test", batch_size: int = 256, limit: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield `(x, y)` batches of the `test` or `train` split, in the dataset's fixed order."""
        x, y = (self.x, self.y) if split == "test" else (self.x_train, self.y_train)
        if not isinstance(x, LazyImages):
            yield from super().batches(split, batch_size, limit)
            return
        n = len(x) if limit is None else min(limit, len(x))
        if n == 0:
            return
        loader = torch.utils.data.DataLoader(
            _FilesDataset(x, y, n),
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.num_workers if n > batch_size else 0,  # one batch: workers only cost
            pin_memory=torch.cuda.is_available(),
        )
        if y is None:
            yield from ((batch, None) for batch in loader)
            return
        yield from loader

    def subset(self, n: int) -> StreamingDataset:
        """The first `n` samples of each split (lazy, nothing decoded)."""
        return replace(
            self,
            x=_head(self.x, n),
            y=None if self.y is None else self.y[:n],
            x_train=_head(self.x_train, n),
            y_train=None if self.y_train is None else self.y_train[:n],
        )

    def materialize(self) -> Dataset:
        """The same splits decoded into an in-memory `Dataset` (small folders only)."""
        x = self.x.materialize() if isinstance(self.x, LazyImages) else self.x
        same = self.x_train is self.x
        xt = (
            x
            if same
            else (self.x_train.materialize() if isinstance(self.x_train, LazyImages) else self.x_train)
        )
        return Dataset(self.spec, x, self.y, xt, self.y_train, self.num_classes, self.has_train_split)


def _head(x, n: int):
    return x.take(range(min(n, len(x)))) if isinstance(x, LazyImages) else x[:n]


def _positive_int(key: str, value: str, minimum: int = 1) -> int:
    try:
        out = int(value)
    except ValueError:
        out = minimum - 1
    if out < minimum:
        raise WorkbenchError(f"imagefolder option {key}={value!r} must be a whole number >= {minimum}")
    return out


def _crop_size(value: str) -> tuple[int, int]:
    h_text, x, w_text = value.lower().partition("x")
    try:
        h = _positive_int("crop", h_text)
        return (h, _positive_int("crop", w_text)) if x else (h, h)
    except WorkbenchError:
        # Quote the whole value (crop=3x), not the empty half that failed.
        raise WorkbenchError(
            f"imagefolder option crop={value!r} must be N or HxW with whole numbers >= 1, like crop=224"
        ) from None


def parse_imagefolder_spec(text: str) -> tuple[Path, dict[str, str]]:
    """`<dir>?key=value&...` -> (dir, options); unknown keys are a one-line error."""
    root, _, query = text.partition("?")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        key = key.strip().lower()
        if key not in _OPTIONS:
            raise WorkbenchError(f"unknown imagefolder option {key!r}: use {', '.join(_OPTIONS)}")
        options[key] = value.strip()
    return Path(root), options


def list_image_files(root: Path) -> tuple[list[str], list[int] | None, list[str]]:
    """(files, labels, class names): one sorted sub-folder per class, files sorted within each; a flat
    folder of images (no sub-folders) is unlabelled: labels None, no classes."""
    if not root.is_dir():
        raise WorkbenchError(f"image folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        flat = sorted(str(p) for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not flat:
            raise WorkbenchError(
                f"{root} has no images and no class sub-folders: put images in it (unlabelled) or each "
                "class's images in its own sub-folder"
            )
        return flat, None, []
    files, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                files.append(str(file))
                labels.append(label)
    if not files:
        raise WorkbenchError(f"{root} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files, labels, classes


def load_imagefolder_stream(spec: str, input_shape: tuple[int, ...] | None = None) -> StreamingDataset:
    """`imagefolder:<dir>?options` (see the module docstring) -> a streaming `Dataset`.

    The split equals `analysis.data.load_imagefolder`'s (a seeded permutation, the first `test` fraction
    for evaluation), so without options the numbers equal the in-memory loader's.
    """
    root, opts = parse_imagefolder_spec(spec)
    c, h, w = tuple(input_shape) if input_shape and len(input_shape) == 3 else (3, 32, 32)
    resize = _positive_int("resize", opts["resize"]) if "resize" in opts else None
    crop = _crop_size(opts["crop"]) if "crop" in opts else None
    if resize is not None and crop is None:
        raise WorkbenchError(
            f"resize={resize} alone leaves images of different sizes: add crop=N (e.g. crop={min(h, w)})"
        )
    norm = parse_normalize(opts.get("normalize", "none"), c)
    transform = ImageTransform(c, (h, w), resize, crop, *(norm or (None, None)))
    if input_shape and len(input_shape) == 3 and transform.output_hw != (h, w):
        oh, ow = transform.output_hw
        raise WorkbenchError(f"crop={oh}x{ow} gives {oh}x{ow} images, the model takes {h}x{w}: crop to {h}")
    seed = int(opts.get("seed", DEFAULT_SEED))
    try:
        test_fraction = float(opts.get("test", DEFAULT_TEST_FRACTION))
    except ValueError:
        test_fraction = -1.0
    if not 0 < test_fraction <= 1:
        raise WorkbenchError(f"imagefolder option test={opts['test']!r} must be a fraction in (0, 1]")

    files, labels, classes = list_image_files(root)
    y_all = torch.tensor(labels) if labels is not None else torch.zeros(len(files), dtype=torch.long)
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(len(files) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    has_train = len(train) > 0
    if not has_train:
        train = test
    if "limit" in opts:
        test = test[balanced_subset(y_all[test], _positive_int("limit", opts["limit"]), seed)]
    if "train_limit" in opts:
        train = train[balanced_subset(y_all[train], _positive_int("train_limit", opts["train_limit"]), seed)]
    images = LazyImages(files, transform)
    if "workers" in opts:
        workers = check_workers(_positive_int("workers", opts["workers"], minimum=0))  # at most the CPUs
    else:
        workers = 0 if len(files) < 256 else min(4, max(0, (os.cpu_count() or 1) - 1))
    unlabelled = labels is None  # a flat folder: balanced caps above saw one class, a seeded sample
    return StreamingDataset(
        f"imagefolder:{spec}",
        images.take(test),
        None if unlabelled else y_all[test],
        images.take(train),
        None if unlabelled else y_all[train],
        len(classes),
        has_train,
        num_workers=workers,
    )
