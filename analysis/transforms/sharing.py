"""Weight sharing by k-means and its storage (Han, Mao and Dally, 2016, Deep Compression).

**Sharing** (per layer, b bits): the layer's nonzero weights are clustered into 2^b centroids by k-means
(scikit-learn's Lloyd iterations, `n_init=1`) started from the *linear* initialization, 2^b points evenly
spaced over [min, max] of the weights, which the paper found best (it keeps the rare large weights, which
matter most, as their own centroids). Every weight is replaced by its centroid. Weights that are exactly zero
(a pruned layer's) are left out of the clustering and stay zero, as in the paper's pipeline.

**Storage** of a shared layer (`SharedWeight.size_bytes`), in whichever of two formats is smaller:
- *dense*: one b-bit index per weight, plus the codebook (2^b float32 centroids);
- *sparse* (the paper's relative indexing): per nonzero weight, its b-bit index and the gap to the previous
  nonzero in `index_bits` bits (the paper's 8 for convolutions, 5 for fully connected layers); a gap that
  does not fit is bridged by escape codes (the all-ones gap code: "skip 2^index_bits - 1 positions", with
  no weight index), plus the codebook.
With `huffman=True` the weight indices and the gap codes are each Huffman-coded from their actual
frequencies (`huffman_code_lengths`, a `heapq` merge), and the code tables add one byte per symbol (code
lengths of a canonical code). Biases, norms and layers left out count at their stored width.

**Centroid fine-tuning** (`finetune_centroids`): the gradient of each centroid is the sum of the gradients
of the weights in its cluster, and the centroid moves by SGD on it; the cluster assignment stays fixed.

Huffman coding is in `huffman`; the Deep Compression pipeline that builds on all of the above is
`analysis.compression.deep_compression`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.metrics import per_sample_loss
from analysis.model.layers import call_model, copy_model
from analysis.progress import Progress
from analysis.transforms.huffman import (  # noqa: F401  (re-exported)
    gap_codes,
    huffman_bits,
    huffman_code_lengths,
)

MIN_SHARE_BITS, MAX_SHARE_BITS = 1, 8
CENTROID_BYTES = 4  # float32 codebook entries
CODE_TABLE_BYTES_PER_SYMBOL = 1  # a canonical Huffman code is rebuilt from its code lengths
CONV_INDEX_BITS, LINEAR_INDEX_BITS = 8, 5  # the paper's relative-index widths
KMEANS_MAX_ITER = 300


def check_share_bits(value, where: str = "share_bits") -> int:
    """`value` as a codebook width in 1..8 bits; WorkbenchError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise WorkbenchError(f"{where} must be a whole number of bits in 1..8, got {value!r}")
    if not MIN_SHARE_BITS <= int(value) <= MAX_SHARE_BITS:
        raise WorkbenchError(
            f"{where} {value} is outside {MIN_SHARE_BITS}..{MAX_SHARE_BITS}: 2^bits centroids, e.g. 4 for 16"
        )
    return int(value)


def weight_layers(model: nn.Module) -> list[str]:
    """Names of the Conv and Linear layers (the layers whose weights sharing and low-bit transforms take)."""
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return [name for name, m in model.named_modules() if name and isinstance(m, kinds)]


def _resolve(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    names = weight_layers(model)
    if layers is None:
        return names
    modules = dict(model.named_modules())
    for name in layers:
        if name not in modules or not name:
            raise WorkbenchError(
                f"no layer named {name!r} in the model: choose one of {', '.join(names[:8])}"
            )
        if name not in names:
            raise WorkbenchError(
                f"layer {name!r} is a {type(modules[name]).__name__}: give a Conv or Linear layer"
            )
    return list(dict.fromkeys(layers))


def linear_init(values: torch.Tensor, k: int) -> torch.Tensor:
    """Deep Compression's linear initialization: `k` points evenly spaced over [min, max] (float64)."""
    v = values.detach().double()
    return torch.linspace(float(v.min()), float(v.max()), k, dtype=torch.float64)


def kmeans_1d(
    values: torch.Tensor, k: int, max_iter: int = KMEANS_MAX_ITER
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means of 1-D `values` into at most `k` clusters from the linear initialization.

    Returns (centroids float64, ascending; labels int64). With `k` or fewer distinct values, each distinct
    value is its own centroid (exact). Runs to strict convergence (labels unchanged) or `max_iter` rounds.
    Equals scikit-learn's `KMeans(init=linear, n_init=1, tol=0, algorithm="lloyd")` wherever no cluster
    empties (a test checks it); an empty cluster keeps its centroid here, where scikit-learn moves it to a
    far point. In 1-D each cluster is an interval, so the assignment is a `bucketize` on the midpoints
    between sorted centroids (ties go to the lower centroid, as scikit-learn's argmin does), and on sorted
    values each cluster's sum is a difference of prefix sums: O(k log n) per round, hundreds of times faster
    than scikit-learn's general path at 256 centroids.
    """
    v = values.detach().double().flatten()
    distinct, inverse = torch.unique(v, return_inverse=True)
    if len(distinct) <= k:
        return distinct, inverse
    # On sorted values a cluster is a slice: its count and sum come from cut positions and a prefix sum.
    ordered, _ = torch.sort(v)
    prefix = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(ordered, 0)])
    centroids = linear_init(v, k)
    cuts = None
    for _ in range(max_iter):
        centroids, _ = torch.sort(centroids)
        inner = torch.searchsorted(ordered, (centroids[1:] + centroids[:-1]) / 2, right=True)
        new = torch.cat([torch.zeros(1, dtype=torch.long), inner, torch.tensor([len(v)])])
        if cuts is not None and torch.equal(new, cuts):
            break
        cuts = new
        counts = cuts[1:] - cuts[:-1]
        sums = prefix[cuts[1:]] - prefix[cuts[:-1]]
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    centroids, _ = torch.sort(centroids)
    labels = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2, right=False)
    return centroids, labels


@dataclass(frozen=True)
class SharedWeight:
    """One layer's shared weight: `centroids` (float32) and per-weight `labels` (int64, weight's shape; -1
    where the weight is zero and left out). `bits` is the codebook width asked for (2^bits centroids)."""

    bits: int
    centroids: torch.Tensor
    labels: torch.Tensor

    def weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The shared weight: each weight its centroid, zeros kept."""
        table = torch.cat([self.centroids, torch.zeros(1, dtype=self.centroids.dtype)])
        return table[self.labels].to(dtype)  # label -1 picks the appended zero

    @property
    def nonzero(self) -> int:
        return int((self.labels >= 0).sum())

    def index_counts(self) -> Counter:
        """How often each centroid index is used (over the nonzero weights)."""
        used = self.labels[self.labels >= 0]
        return Counter(dict(enumerate(torch.bincount(used, minlength=len(self.centroids)).tolist())))

    def size_bytes(self, huffman: bool = False, index_bits: int | None = None) -> dict:
        """Stored size in bytes (see the module docstring) and the format chosen: {"bytes", "format",
        "index_bits", "values_bits", "positions_bits", "codebook_bytes"}."""
        n = self.labels.numel()
        index_bits = index_bits or (CONV_INDEX_BITS if self.labels.dim() > 2 else LINEAR_INDEX_BITS)
        codebook = len(self.centroids) * CENTROID_BYTES
        counts = self.index_counts()
        zeros = n - self.nonzero
        value_bits = math.ceil(math.log2(max(2, len(self.centroids))))
        if huffman:
            values = huffman_bits(counts)
            codebook += CODE_TABLE_BYTES_PER_SYMBOL * sum(1 for c in counts.values() if c)
        else:
            values = self.nonzero * value_bits
        # dense: every weight gets an index; zeros (if any) need a symbol of their own
        if huffman:
            dense_values = huffman_bits(counts + Counter({-1: zeros})) if zeros else values
            dense_extra = CODE_TABLE_BYTES_PER_SYMBOL if zeros else 0
        else:
            dense_values = n * math.ceil(math.log2(max(2, len(self.centroids) + (1 if zeros else 0))))
            dense_extra = 0
        candidates = {"dense": (math.ceil(dense_values / 8) + codebook + dense_extra, dense_values, 0)}
        if zeros:
            positions = gap_codes(torch.nonzero(self.labels.flatten() >= 0).flatten(), index_bits)
            pos_bits = huffman_bits(positions) if huffman else sum(positions.values()) * index_bits
            table = CODE_TABLE_BYTES_PER_SYMBOL * len(positions) if huffman else 0
            candidates["sparse"] = (math.ceil((values + pos_bits) / 8) + codebook + table, values, pos_bits)
        fmt = min(candidates, key=lambda k: candidates[k][0])
        total, vbits, pbits = candidates[fmt]
        return {
            "bytes": int(total),
            "format": fmt,
            "index_bits": index_bits if fmt == "sparse" else 0,
            "values_bits": int(vbits),
            "positions_bits": int(pbits),
            "codebook_bytes": codebook,
        }


def share_weight(weight: torch.Tensor, bits: int, max_iter: int = KMEANS_MAX_ITER) -> SharedWeight:
    """k-means weight sharing of one weight tensor with 2^bits centroids (zeros left out and kept)."""
    bits = check_share_bits(bits)
    w = weight.detach().cpu()
    mask = w != 0
    labels = torch.full(w.shape, -1, dtype=torch.long)
    if not bool(mask.any()):
        return SharedWeight(bits, torch.zeros(0, dtype=torch.float32), labels)
    centroids, assigned = kmeans_1d(w[mask], 2**bits, max_iter)
    labels[mask] = assigned
    return SharedWeight(bits, centroids.float(), labels)


def _bits_map(
    model: nn.Module, bits: int | Mapping[str, int], layers: Sequence[str] | None
) -> dict[str, int]:
    if isinstance(bits, Mapping):
        names = _resolve(model, list(bits))
        return {name: check_share_bits(bits[name], f"layer {name!r}: share_bits") for name in names}
    b = check_share_bits(bits)
    return {name: b for name in _resolve(model, layers)}


def share_weights(
    model: nn.Module,
    bits: int | Mapping[str, int],
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> tuple[nn.Module, dict[str, SharedWeight]]:
    """A copy of `model` with the weights of `layers` (default: every Conv/Linear) shared at `bits` (or
    per-layer bits), and each layer's SharedWeight. The model handed in is not changed."""
    chosen = _bits_map(model, bits, layers)
    work = copy_model(model)
    shared: dict[str, SharedWeight] = {}
    with torch.no_grad():
        for i, (name, b) in enumerate(chosen.items()):
            module = work.get_submodule(name)
            shared[name] = share_weight(module.weight, b)
            module.weight.copy_(shared[name].weight(module.weight.dtype))
            if progress:
                progress(i + 1, len(chosen))
    return work, shared


def model_size_bytes(
    model: nn.Module,
    shared: Mapping[str, SharedWeight],
    huffman: bool = False,
    index_bits: Mapping[str, int] | None = None,
) -> int:
    """Bytes to store `model` with each shared layer's weight in its shared format (module docstring), every
    other parameter and buffer at its stored width."""
    replaced = {id(model.get_submodule(name).weight): name for name in shared}
    total, seen = 0, set()
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        name = replaced.get(id(t))
        if name is None:
            total += t.numel() * t.element_size()
        else:
            total += shared[name].size_bytes(huffman, (index_bits or {}).get(name))["bytes"]
    return total


def sparse_float_size_bytes(
    model: nn.Module, layers: Sequence[str], index_bits: Mapping[str, int] | None = None
) -> int:
    """Bytes with the weights of `layers` stored as float32 nonzeros plus relative indices (the paper's
    pruning stage), or dense where that is smaller; everything else at its stored width."""
    chosen = set(layers)
    total, seen = 0, set()
    by_id = {id(m.weight): (n, m) for n, m in model.named_modules() if n in chosen}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        dense = t.numel() * t.element_size()
        if id(t) not in by_id:
            total += dense
            continue
        name, _ = by_id[id(t)]
        bits = (index_bits or {}).get(name) or (CONV_INDEX_BITS if t.dim() > 2 else LINEAR_INDEX_BITS)
        positions = gap_codes(torch.nonzero(t.detach().flatten()).flatten(), bits)
        nonzero = int((t != 0).sum())
        sparse = math.ceil((nonzero * t.element_size() * 8 + sum(positions.values()) * bits) / 8)
        total += min(dense, sparse)
    return total


def finetune_centroids(
    model: nn.Module,
    shared: Mapping[str, SharedWeight],
    data: Dataset,
    epochs: int = 1,
    batches: int | None = None,
    lr: float = 1e-4,
    momentum: float = 0.9,
    batch_size: int = 32,
    seed: int = 0,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[nn.Module, dict[str, SharedWeight]]:
    """Fine-tune the centroids of the shared layers on `data`'s training split (cross-entropy), as the paper
    does: each centroid's gradient is the sum of its cluster's weight gradients; SGD with `lr` and `momentum`.

    Runs `epochs` passes, or `batches` batches in all when given. Only centroids change (assignments, other
    parameters and norm statistics stay; the model runs in eval mode). Returns a new model and its new
    SharedWeights; `model` is not changed.
    """
    if epochs < 0 or (batches is not None and batches < 0):
        raise WorkbenchError(f"epochs and batches must be >= 0, got {epochs} and {batches}")
    if len(data.x_train) == 0:
        raise WorkbenchError("the data has no training samples to fine-tune on")
    if data.y_train is None:
        raise WorkbenchError("fine-tuning the centroids needs labels (cross-entropy): the data has none")
    work = copy_model(model).eval()
    for p in work.parameters():
        p.requires_grad_(False)
    centroids = {name: s.centroids.clone().requires_grad_(False) for name, s in shared.items()}
    weights = {name: work.get_submodule(name).weight for name in shared}
    for w in weights.values():
        w.requires_grad_(True)
    labels = {name: s.labels.to(weights[name].device) for name, s in shared.items()}
    for c in centroids.values():
        c.grad = torch.zeros_like(c)
    optimizer = torch.optim.SGD(list(centroids.values()), lr=lr, momentum=momentum)
    n = len(data.x_train)
    per_epoch = (n + batch_size - 1) // batch_size
    total = batches if batches is not None else epochs * per_epoch
    generator = torch.Generator().manual_seed(seed)
    done = 0
    with torch.inference_mode(False), torch.enable_grad():
        while done < total:
            order = torch.randperm(n, generator=generator)
            for begin in range(0, n, batch_size):
                if done >= total or (should_stop and should_stop()):
                    total = done
                    break
                idx = order[begin : begin + batch_size]
                for w in weights.values():
                    w.grad = None
                loss = per_sample_loss(call_model(work, data.x_train[idx]), data.y_train[idx]).mean()
                loss.backward()
                for name, c in centroids.items():
                    keep = labels[name] >= 0
                    grad = torch.zeros_like(c).index_add_(
                        0, labels[name][keep], weights[name].grad[keep].to(c.dtype)
                    )
                    c.grad.copy_(grad)
                optimizer.step()
                with torch.no_grad():
                    for name, c in centroids.items():
                        updated = SharedWeight(shared[name].bits, c.detach(), shared[name].labels)
                        weights[name].copy_(updated.weight(weights[name].dtype))
                done += 1
                if progress:
                    progress(done, total)
    for w in weights.values():
        w.grad = None
    for p in work.parameters():
        p.requires_grad_(True)
    new = {
        name: SharedWeight(s.bits, centroids[name].detach().clone(), s.labels) for name, s in shared.items()
    }
    return work, new


__all__ = [
    "SharedWeight",
    "check_share_bits",
    "finetune_centroids",
    "gap_codes",
    "huffman_bits",
    "huffman_code_lengths",
    "kmeans_1d",
    "linear_init",
    "model_size_bytes",
    "share_weight",
    "share_weights",
    "sparse_float_size_bytes",
    "weight_layers",
]
