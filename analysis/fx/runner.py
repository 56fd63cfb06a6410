"""Cached downstream evaluation: "with this change applied to layers X, what are the loss and accuracy?"

Recomputing the whole network for every candidate change (every layer x ratio of a sensitivity sweep, every
channel of the oracle criterion) wastes the work upstream of the change, which the change cannot affect.
This module traces the model once with `torch.fx`, and for each set of changed modules builds a *suffix*
GraphModule: only the nodes downstream of those modules, fed with the cached values of the upstream nodes
they read. Numbers are identical to a full forward pass (same ops on the same inputs).

Public API (stable; other modules and helpers code against it)
--------------------------------------------------------------

`Edit(modules, apply, key=None)`
    One change to evaluate. `modules` names (model.named_modules() names) every module whose parameters or
    buffers `apply(model)` changes *in place*; the runner restores those modules' parameters and buffers
    after evaluating the edit, so `apply` needs no undo. `key` is free for the caller (e.g. (layer, ratio)).

`DownstreamRunner(model, x, y, batch_size=256, use_cache=True, max_cache_bytes=DEFAULT_MAX_CACHE_BYTES,
copy_model=True)`
    Holds a deep copy of `model` (eval mode, `runner.model`; edits are applied to that copy, so the caller's
    model is never touched) and the evaluation data `x`, `y` (tensors; class labels in `y`).
    `DownstreamRunner.from_data(model, data, split="test", limit=None, **kw)` takes an `analysis.Dataset`.

    `runner.evaluate(edits, progress=None, stop=None) -> RunnerResult`
        Evaluates every edit over all the data. Loop order: for each batch, one full forward pass caches the
        activations the suffixes read (and gives the unedited baseline), then every edit is applied, its
        suffix run on that batch, and its parameters restored. `RunnerResult.baseline` is the unedited
        `EvalResult`; `RunnerResult.results[i]` the `EvalResult` of `edits[i]` (None if `stop` dropped it).
        `progress(done, total)` counts batch x edit steps. `stop(tally) -> iterable of edit indices`, called
        after each batch with a `Tally` (running correct counts and loss sums), lets a caller drop edits
        early (the sensitivity sweep's early stop uses it).

    `runner.traced` (bool) and `runner.notes` (list of str) say whether fx tracing worked; where it did not
    (data-dependent control flow, say) every edit is evaluated with a full forward pass instead, same
    numbers, slower, and a note says why. In-place ops (nn.ReLU(inplace=True), `x += y`, `x.relu_()`)
    are rewritten out-of-place so suffix runs never write into the cache; where the model reads a tensor
    after changing it in place (so the rewrite would change the numbers), or writes with no out-of-place
    twin (`x[...] = v`), the runner falls back to full evaluation with a note naming the op.

`trace_model(model) -> torch.fx.GraphModule` (`analysis.fx.trace`; raises WorkbenchError naming the reason where tracing fails)
`downstream_nodes(gm, modules) -> set[str]` (`analysis.fx.slicing`): names of the graph nodes whose values depend on `modules`.
A module counts as used by a graph node that calls it, reads one of its parameters, or calls a leaf module
containing it (nn.MultiheadAttention's out_proj); an edit whose modules no node uses is evaluated with a
full forward pass.

Memory bound
------------
The cache holds, for ONE batch, the values of every node that some edit's suffix reads (the union over the
edits' "frontiers"). Its size is measured on the first batch; if it exceeds `max_cache_bytes` (default
1 GiB) the batch is split into smaller chunks so one chunk's cache fits (down to one sample; past that the
cache of a single sample is used anyway and a note says so). Smaller chunks give the same numbers up to
float rounding of the kernels.

Example (oracle criterion: |loss change| when channel c of a conv and its BN are zeroed)::

    runner = DownstreamRunner.from_data(model, data, split="train", limit=DEFAULT_MAX_SAMPLES)
    def zero(c):
        def apply(m):
            m.get_submodule("features.3").weight[c] = 0
            bn = m.get_submodule("features.4"); bn.weight[c] = 0; bn.bias[c] = 0
        return Edit(("features.3", "features.4"), apply, key=c)
    out = runner.evaluate([zero(c) for c in range(64)])
    scores = [abs(r.loss - out.baseline.loss) for r in out.results]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from analysis.errors import WorkbenchError
from analysis.evaluate import EvalResult
from analysis.fx.slicing import Suffix, build_prefix, build_suffix, downstream
from analysis.fx.trace import trace_model
from analysis.inputs import InputBatch
from analysis.layers import call_model
from analysis.metrics import Accuracy, Agreement, MetricTally, Scoring
from analysis.outputs import flatten_outputs
from analysis.progress import Progress

DEFAULT_MAX_CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class Edit:
    """A change to evaluate: `apply(model)` changes parameters/buffers of `modules` in place.

    The runner restores every parameter and buffer of `modules` (recursively) after the edit, so `apply`
    needs no undo; it must not change anything outside `modules`. `key` is for the caller.
    """

    modules: tuple[str, ...]
    apply: Callable[[nn.Module], None]
    key: Hashable = None


@dataclass
class Tally:
    """Running sums after some batches: what a `stop` callback sees (read-only by convention).

    `correct` / `baseline_correct` are the sums of per-sample scores of a bounded metric (each sample 0..1:
    accuracy's correct counts, agreement's agreeing samples), so a caller can bound what the remaining
    samples could still do; `scores` / `baseline_score` are the metric tallies themselves.
    """

    total: int
    seen: int = 0
    baseline_correct: float = 0
    baseline_loss_sum: float = 0.0
    correct: list[float] = field(default_factory=list)
    loss_sum: list[float] = field(default_factory=list)
    active: list[bool] = field(default_factory=list)
    scores: list[MetricTally] = field(default_factory=list)
    baseline_score: MetricTally | None = None

    @property
    def remaining(self) -> int:
        return self.total - self.seen


@dataclass(frozen=True)
class RunnerResult:
    """The unedited baseline and one `EvalResult` per edit (None where a `stop` callback dropped it)."""

    baseline: EvalResult
    results: list[EvalResult | None]
    notes: tuple[str, ...] = ()


def _tensor_bytes(values: Iterable[object]) -> int:
    """Bytes the tensors in `values` span, counting a view that appears twice once.

    A view's own extent, not its storage's: the one-sample input a cache is sized on is a view of the whole
    data set, and scaling that storage by the batch size overstated the cache a hundredfold.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    for value in values:
        for t in _tensors(value):
            key = (t.data_ptr(), t.numel())
            if key not in seen:
                seen.add(key)
                total += t.numel() * t.element_size()
    return total


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


class _Snapshots:
    """Copies of the parameters and buffers of edited modules, to restore them after each edit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._saved: dict[str, list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]]] = {}

    def _entries(self, name: str) -> list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]]:
        if name not in self._saved:
            root = self.model.get_submodule(name)
            entries = []
            for module in root.modules():
                for attr, t in list(module._parameters.items()) + list(module._buffers.items()):
                    if t is not None:
                        entries.append((module, attr, t, t.detach().clone()))
            self._saved[name] = entries
        return self._saved[name]

    def prepare(self, names: Iterable[str]) -> None:
        for name in names:
            self._entries(name)

    def restore(self, names: Iterable[str]) -> None:
        with torch.no_grad():
            for name in names:
                for module, attr, original, saved in self._entries(name):
                    current = module._parameters.get(attr, module._buffers.get(attr))
                    if current is not original:  # `apply` replaced the tensor object: put ours back
                        if attr in module._parameters:
                            module._parameters[attr] = original
                        else:
                            module._buffers[attr] = original
                    original.copy_(saved)


def _check_modules(model: nn.Module, edits: Sequence[Edit]) -> None:
    names = {n for n, _ in model.named_modules()}
    for edit in edits:
        for m in edit.modules:
            if m not in names:
                raise WorkbenchError(
                    f"no layer named {m!r} in the model: use a name from model.named_modules()"
                )


class DownstreamRunner:
    """Evaluates edits of a model, recomputing only the part of the network downstream of each edit.

    See the module docstring for the loop order and the memory bound. `model` is deep-copied unless
    `copy_model` is False (then the runner edits and restores that model in place).
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor | InputBatch,
        y: torch.Tensor | None,
        batch_size: int = 256,
        use_cache: bool = True,
        max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
        copy_model: bool = True,
        scoring: Scoring | None = None,
    ) -> None:
        if batch_size < 1:
            raise WorkbenchError(f"batch size must be at least 1, got {batch_size}")
        if y is not None and len(x) != len(y):
            raise WorkbenchError(f"{len(x)} inputs but {len(y)} labels: they must match")
        self.model = copy.deepcopy(model) if copy_model else model
        self.model.eval()
        self.x, self.y = x, y
        # How outputs are scored; without one, accuracy against the labels (agreement with the unedited
        # model where there are none). A metric that needs the original's outputs reads the unedited pass
        # of the same batch: the reference comes with the cache, at no extra cost.
        self.scoring = scoring or Scoring(Accuracy if y is not None else Agreement, y is not None, y is None)
        if y is None and self.scoring.uses_labels:
            raise WorkbenchError("this metric needs labels and the data has none: use --metric agreement")
        self.batch_size = batch_size
        self.use_cache = use_cache
        self.max_cache_bytes = max_cache_bytes
        self.notes: list[str] = []
        self.gm: fx.GraphModule | None = None
        if use_cache:
            try:
                self.gm = trace_model(self.model)
            except WorkbenchError as exc:
                self.notes.append(f"{exc}: fell back to full evaluation (same numbers, slower)")

    @classmethod
    def from_data(
        cls, model: nn.Module, data, split: str = "test", limit: int | None = None, **kwargs
    ) -> DownstreamRunner:
        """A runner over `data`'s evaluation split (or `train`), the first `limit` samples."""
        x, y = (data.x, data.y) if split == "test" else (data.x_train, data.y_train)
        if limit is not None:
            x, y = x[:limit], None if y is None else y[:limit]
        return cls(model, x, y, **kwargs)

    @property
    def traced(self) -> bool:
        return self.gm is not None

    def _batches(self, size: int) -> list[tuple[torch.Tensor | InputBatch, torch.Tensor | None]]:
        y = self.y
        return [
            (self.x[i : i + size], None if y is None else y[i : i + size])
            for i in range(0, len(self.x), size)
        ]

    def evaluate(
        self,
        edits: Sequence[Edit],
        progress: Progress | None = None,
        stop: Callable[[Tally], Iterable[int]] | None = None,
    ) -> RunnerResult:
        """Loss and accuracy of the model under each edit (one at a time), plus the unedited baseline."""
        # Long: one pass over the batches whose edits must be restored in the same try/finally.
        edits = list(edits)
        _check_modules(self.model, edits)
        notes = list(self.notes)
        snapshots = _Snapshots(self.model)
        snapshots.prepare({m for e in edits for m in e.modules})
        suffixes: dict[frozenset[str], Suffix | None] = {}
        prefix = None
        batch_size = self.batch_size
        if self.gm is not None and edits:
            for edit in edits:
                key = frozenset(edit.modules)
                if key not in suffixes:
                    down = downstream(self.gm, sorted(key))
                    suffixes[key] = None if down is None else build_suffix(self.gm, down)
            if any(s is None for s in suffixes.values()):
                notes.append(
                    "some edited modules are not called in the traced graph: those use full evaluation"
                )
            keep = sorted({name for s in suffixes.values() if s is not None for name in s.frontier})
            prefix = build_prefix(self.gm, keep)
            batch_size = self._fit_cache(prefix, batch_size, notes)
        batches = self._batches(batch_size)
        tally = Tally(total=len(self.x), correct=[0] * len(edits), loss_sum=[0.0] * len(edits))
        tally.active = [True] * len(edits)
        tally.scores = [self.scoring.tally() for _ in edits]
        tally.baseline_score = self.scoring.tally()
        total_steps, done = len(batches) * len(edits), 0
        was_training = self.model.training
        self.model.eval()
        try:
            for b, (x, y) in enumerate(batches):
                with torch.inference_mode():
                    if prefix is not None:
                        out, kept = call_model(prefix, x)
                        cache = dict(zip(keep, kept, strict=True))
                    else:
                        out, cache = call_model(self.model, x), {}
                    reference = flatten_outputs(out) if self.scoring.needs_reference else None
                    self._count(tally, -1, out, y, reference)
                for i, edit in enumerate(edits):
                    if not tally.active[i]:
                        continue
                    with torch.no_grad():
                        edit.apply(self.model)
                    try:
                        with torch.inference_mode():
                            suffix = suffixes.get(frozenset(edit.modules))
                            if suffix is None:
                                logits = call_model(self.model, x)
                            else:
                                logits = suffix.module(*[cache[n] for n in suffix.frontier])
                            self._count(tally, i, logits, y, reference)
                    finally:
                        snapshots.restore(edit.modules)
                    done += 1
                    if progress:
                        progress(done, total_steps)
                tally.seen += len(x)
                if stop is not None and tally.remaining > 0:
                    for i in stop(tally):
                        if tally.active[i]:
                            tally.active[i] = False
                            done += len(batches) - b - 1
                    if progress:
                        progress(done, total_steps)
        finally:
            self.model.train(was_training)
        n = tally.seen
        info = self.scoring.info
        if n == 0:
            nan = float("nan")
            empty = EvalResult(nan, nan, 0, info)
            return RunnerResult(empty, [empty] * len(edits), tuple(notes))
        base = tally.baseline_score
        baseline = EvalResult(base.value(), base.loss, n, info)
        results = [
            EvalResult(tally.scores[i].value(), tally.scores[i].loss, n, info) if tally.active[i] else None
            for i in range(len(edits))
        ]
        return RunnerResult(baseline, results, tuple(notes))

    @staticmethod
    def _count(tally: Tally, i: int, out: object, y: torch.Tensor | None, reference: dict | None) -> None:
        # Scores and losses in float32 under --dtype too (the metrics cast).
        scores = tally.baseline_score if i < 0 else tally.scores[i]
        scores.update(out, y, reference)
        if i < 0:
            tally.baseline_correct = scores.metric.total
            tally.baseline_loss_sum = scores.loss_sum
        else:
            tally.correct[i] = scores.metric.total
            tally.loss_sum[i] = scores.loss_sum

    def _fit_cache(self, prefix: fx.GraphModule, batch_size: int, notes: list[str]) -> int:
        """The batch size whose cache fits `max_cache_bytes`, measured on one sample."""
        if len(self.x) == 0:
            return batch_size
        with torch.inference_mode():
            _, kept = call_model(prefix, self.x[:1])
        per_sample = max(1, _tensor_bytes(kept))
        fit = max(1, self.max_cache_bytes // per_sample)
        if fit < min(batch_size, len(self.x)):
            notes.append(
                f"activation cache of {per_sample * batch_size / 2**20:.1f} MiB per batch of {batch_size} is over "
                f"max_cache_bytes ({self.max_cache_bytes / 2**20:.1f} MiB): evaluated in chunks of {fit} samples"
                + (
                    " (one sample's cache is over the limit too; used anyway)"
                    if per_sample > self.max_cache_bytes
                    else ""
                )
            )
            return int(fit)
        return batch_size
