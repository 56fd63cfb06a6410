"""Cached downstream evaluation: "with this change applied to layers X, what are the loss and accuracy?"

Recomputing the whole network for every candidate change (every layer x ratio of a sensitivity sweep, every
channel of the oracle criterion) wastes the work upstream of the change, which the change cannot affect.
This module traces the model once with `torch.fx`, and for each set of changed modules builds a *suffix*
GraphModule: only the nodes downstream of those modules, fed with the cached values of the upstream nodes
they read. Numbers are those of a full forward pass (same ops on the same inputs; the runner computes in
channels-last memory format where the model has 2-d convolutions, which CPU convolutions run 1.3-1.9x
faster, equal to the standard layout's up to float rounding; `channels_last=False` keeps the standard one).

Public API (stable; other modules and helpers code against it)
--------------------------------------------------------------

`Edit(modules, apply, key=None)`
    One change to evaluate. `modules` names (model.named_modules() names) every module whose parameters or
    buffers `apply(model)` changes *in place*; the runner restores those modules' parameters and buffers
    after evaluating the edit, so `apply` needs no undo. `key` is free for the caller (e.g. (layer, ratio)).

`DownstreamRunner(model, x, y, batch_size=256, use_cache=True, max_cache_bytes=DEFAULT_MAX_CACHE_BYTES,
copy_model=True, channels_last=True)`
    Holds a deep copy of `model` (eval mode, `runner.model`; edits are applied to that copy, so the caller's
    model is never touched) and the evaluation data `x`, `y` (tensors; class labels in `y`).
    `DownstreamRunner.from_data(model, data, split="test", limit=None, **kw)` takes an `analysis.Dataset`.

    `runner.evaluate(edits, progress=None, stop=None) -> RunnerResult`
        Evaluates every edit over all the data: one full forward pass per batch caches the activations the
        suffixes read (and gives the unedited baseline); then every edit is applied, its suffix run on each
        batch, and its parameters restored. `RunnerResult.baseline` is the unedited `EvalResult`;
        `RunnerResult.results[i]` the `EvalResult` of `edits[i]` (None if `stop` dropped it).
        `progress(done, total)` counts batch x edit steps. `stop(tally) -> iterable of edit indices`, called
        after each batch with a `Tally` (running correct counts and loss sums), lets a caller drop edits
        early (the sensitivity sweep's early stop uses it).

    `runner.evaluate_chunks(chunks, progress=None, stop_for=None, should_stop=None) -> [RunnerResult]`
        The same over chunks of edits (a sweep: one chunk per layer), one chunk after the other, asking
        `should_stop()` before each (a stopped sweep keeps the finished layers). The cached activations are
        computed once for every chunk, not once per chunk: with 3 points per layer, recomputing them per
        layer cost as much as the points themselves.

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
The cache holds the values of every node that some edit's suffix reads (the union over the edits'
"frontiers"), measured on one sample. Where that fits `max_cache_bytes` (default 1 GiB) for every sample,
it is kept for all the batches, and each value is freed after the last chunk that reads it. Otherwise it
is kept for one batch at a time and recomputed per chunk (only the nodes upstream of that chunk); and if
one batch's cache is over the limit, the batch is split so one chunk's cache fits (down to one sample;
past that the cache of a single sample is used anyway and a note says so). Smaller batches give the same
numbers up to float rounding of the kernels.

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
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.fx as fx
from torch import nn

from analysis.errors import WorkbenchError
from analysis.evaluate import EvalResult
from analysis.fx.edits import Edit, RunnerResult, Tally
from analysis.fx.slicing import Suffix, build_prefix, build_suffix, downstream
from analysis.fx.snapshots import Snapshots, check_modules, last_use, tensor_bytes
from analysis.fx.trace import trace_model
from analysis.metrics import Accuracy, Agreement, Scoring
from analysis.model.inputs import InputBatch
from analysis.model.layers import call_model
from analysis.model.outputs import flatten_outputs
from analysis.progress import Progress

DEFAULT_MAX_CACHE_BYTES = 1 << 30


REFERENCE = "<reference>"
"""The cache key of the unedited model's outputs on a batch, which a fidelity metric compares with."""


class _Run:
    """The counters of one `evaluate_chunks` call: the baseline's tally, and progress over batch x edit
    steps (an edit dropped by early stop counts its skipped batches as done)."""

    def __init__(self, total: int, steps: int, progress: Progress | None, scoring: Scoring) -> None:
        self.scoring = scoring
        self.base = Tally(total=total, baseline_score=scoring.tally())
        self.steps, self.done, self.progress = steps, 0, progress

    def tally(self, n: int) -> Tally:
        return Tally(
            total=self.base.total,
            correct=[0] * n,
            loss_sum=[0.0] * n,
            active=[True] * n,
            scores=[self.scoring.tally() for _ in range(n)],
        )

    def step(self, n: int) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.steps)

    def drop(self, tally: Tally, stop: Callable[[Tally], Iterable[int]], batches_left: int) -> None:
        """Ask `stop` which edits to drop (it sees the baseline counted so far) and drop them."""
        tally.baseline_correct, tally.baseline_loss_sum, tally.baseline_score = (
            self.base.baseline_correct,
            self.base.baseline_loss_sum,
            self.base.baseline_score,
        )
        for i in stop(tally):
            if tally.active[i]:
                tally.active[i] = False
                self.done += batches_left
        self.step(0)

    def result(self, tally: Tally, notes: list[str]) -> RunnerResult:
        n, base, info = tally.seen, self.base, self.scoring.info
        if base.seen == 0:
            nan = float("nan")
            empty = EvalResult(nan, nan, 0, info)
            return RunnerResult(empty, [empty] * len(tally.correct), tuple(notes))
        score = base.baseline_score
        baseline = EvalResult(score.value(), score.loss, base.seen, info)
        results = [
            EvalResult(tally.scores[i].value(), tally.scores[i].loss, n, info) if tally.active[i] else None
            for i in range(len(tally.correct))
        ]
        return RunnerResult(baseline, results, tuple(notes))


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
        channels_last: bool = True,
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
        self.channels_last = channels_last
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

    def _batches(
        self, size: int, channels_last: bool = False
    ) -> list[tuple[torch.Tensor | InputBatch, torch.Tensor | None]]:
        y = self.y
        batches = [
            (self.x[i : i + size], None if y is None else y[i : i + size])
            for i in range(0, len(self.x), size)
        ]
        if channels_last:
            batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
        return batches

    def _use_channels_last(self) -> bool:
        """Whether to run in channels-last memory format: CPU convolutions then skip oneDNN's layout reorders
        (1.3-1.9x faster on the zoo and ResNet-18). Numbers equal the standard layout's up to float rounding.
        Only for one 4-d input tensor where the model has 2-d convolutions, all in the standard layout (so
        restoring it is exact)."""
        x = self.x
        if (
            not self.channels_last
            or not isinstance(x, torch.Tensor)
            or x.dim() != 4
            or x.device.type != "cpu"
        ):
            return False
        weights = [m.weight for m in self.model.modules() if isinstance(m, nn.Conv2d)]
        return bool(weights) and all(w.is_contiguous() for w in weights)

    def evaluate(
        self,
        edits: Sequence[Edit],
        progress: Progress | None = None,
        stop: Callable[[Tally], Iterable[int]] | None = None,
    ) -> RunnerResult:
        """Loss and accuracy of the model under each edit (one at a time), plus the unedited baseline."""
        return self.evaluate_chunks([edits], progress, None if stop is None else (lambda _: stop))[0]

    def evaluate_chunks(
        self,
        chunks: Sequence[Sequence[Edit]],
        progress: Progress | None = None,
        stop_for: Callable[[int], Callable[[Tally], Iterable[int]] | None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[RunnerResult]:
        """`evaluate` over several chunks of edits (a sweep's chunk: one layer's points), one chunk at a
        time, asking `should_stop()` before each: one RunnerResult per finished chunk (fewer when stopped).
        `stop_for(c)` is chunk c's early-stop callback (indices within the chunk).

        The upstream activations every chunk reads are computed once, for all the batches, and kept while
        a later chunk still reads them, where they fit `max_cache_bytes`; otherwise once per chunk and
        batch. Same numbers either way, and the same as `evaluate` on each chunk alone.
        """
        chunks = [list(c) for c in chunks]
        edits = [e for c in chunks for e in c]
        check_modules(self.model, edits)
        notes = list(self.notes)
        snapshots = Snapshots(self.model)
        snapshots.prepare({m for e in edits for m in e.modules})
        suffixes = self._suffixes(edits, notes)
        keep = sorted({name for s in suffixes.values() if s is not None for name in s.frontier})
        prefix = build_prefix(self.gm, keep) if suffixes else None
        batch_size, held = self.batch_size, True
        if prefix is not None:
            batch_size, per_sample = self._fit_cache(prefix, self.batch_size, notes)
            held = per_sample * len(self.x) <= self.max_cache_bytes
        fast = self._use_channels_last()
        batches = self._batches(batch_size, fast)
        run = _Run(len(self.x), len(batches) * len(edits), progress, self.scoring)
        was_training = self.model.training
        self.model.eval()
        if fast:
            self.model.to(memory_format=torch.channels_last)
        try:
            caches = self._baseline(prefix, keep, batches, run) if held else None
            last_reader = last_use(chunks, suffixes)
            results = []
            for c, chunk in enumerate(chunks):
                if should_stop is not None and should_stop():
                    break
                if caches is None:  # too large to hold for every batch: this chunk's values, per batch
                    frontier = sorted(
                        {n for e in chunk if (s := suffixes.get(frozenset(e.modules))) for n in s.frontier}
                    )
                    with_output = c == 0 or self.scoring.needs_reference
                    chunk_prefix = build_prefix(self.gm, frontier, output=with_output) if c > 0 else prefix
                    names = frontier if c > 0 else keep
                else:
                    chunk_prefix, names = None, keep
                tally = run.tally(len(chunk))
                stop = stop_for(c) if stop_for is not None else None
                for b, (x, y) in enumerate(batches):
                    if caches is not None:
                        cache = caches[b]
                    else:
                        cache = self._upstream(chunk_prefix, names, x, y, run, c == 0, with_output)
                    self._run_chunk(chunk, tally, x, y, cache, suffixes, snapshots, run)
                    tally.seen += len(x)
                    if stop is not None and tally.remaining > 0:
                        run.drop(tally, stop, len(batches) - b - 1)
                results.append(run.result(tally, notes))
                if caches is not None:  # values no later chunk reads are freed as the sweep moves on
                    for cache in caches:
                        for name in [n for n in cache if n != REFERENCE and last_reader.get(n, -1) <= c]:
                            del cache[name]
            if not chunks:
                results.append(run.result(run.tally(0), notes))
        finally:
            self.model.train(was_training)
            if fast:
                self.model.to(memory_format=torch.contiguous_format)
        return results

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        """The whole model's output for batch `x` (under inference mode); a runner on another runtime
        (`analysis.runtime.edit_runner`) runs it there instead."""
        return call_model(self.model, x)

    def _suffixes(self, edits: Sequence[Edit], notes: list[str]) -> dict[frozenset[str], Suffix | None]:
        """The suffix graph of each distinct set of edited modules (None: evaluated with a full pass)."""
        suffixes: dict[frozenset[str], Suffix | None] = {}
        if self.gm is None or not edits:
            return suffixes
        for edit in edits:
            key = frozenset(edit.modules)
            if key not in suffixes:
                down = downstream(self.gm, sorted(key))
                suffixes[key] = None if down is None else build_suffix(self.gm, down)
        if any(s is None for s in suffixes.values()):
            notes.append("some edited modules are not called in the traced graph: those use full evaluation")
        return suffixes

    def _upstream(self, prefix, names, x, y, run: _Run, baseline: bool, with_output: bool = True) -> dict:
        """The cached values `names` for batch `x`, the unedited outputs under `REFERENCE` where the metric
        compares with them, and with `baseline` the unedited counts. `prefix` returns (outputs, values)
        when built `with_output`, else the values alone; None runs the whole model (no cache)."""
        needs_reference = self.scoring.needs_reference
        with torch.inference_mode():
            out, cache = None, {}
            if prefix is None:
                if baseline or needs_reference:
                    out = self._full(x)
            else:
                got = call_model(prefix, x)
                out, kept = got if with_output else (None, got)
                cache = dict(zip(names, kept, strict=True))
            if needs_reference and out is not None:
                cache[REFERENCE] = flatten_outputs(out)
            if baseline:
                self._count(run.base, -1, out, y, cache.get(REFERENCE))
                run.base.seen += len(x)
            return cache

    def _baseline(self, prefix, keep, batches, run: _Run) -> list[dict[str, object]]:
        """One full pass over every batch: the baseline counts, and each batch's cached values, kept."""
        return [self._upstream(prefix, keep, x, y, run, True) for x, y in batches]

    def _run_chunk(self, chunk, tally: Tally, x, y, cache, suffixes, snapshots: Snapshots, run: _Run) -> None:
        """Each active edit of `chunk` on one batch: applied, its suffix run from the cache (or the whole
        model), counted, restored."""
        for i, edit in enumerate(chunk):
            if not tally.active[i]:
                continue
            with torch.no_grad():
                edit.apply(self.model)
            try:
                with torch.inference_mode():
                    suffix = suffixes.get(frozenset(edit.modules))
                    if suffix is None:
                        logits = self._full(x)
                    else:
                        logits = suffix.module(*[cache[n] for n in suffix.frontier])
                    self._count(tally, i, logits, y, cache.get(REFERENCE))
            finally:
                snapshots.restore(edit.modules)
            run.step(1)

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

    def _fit_cache(self, prefix: fx.GraphModule, batch_size: int, notes: list[str]) -> tuple[int, int]:
        """The batch size whose cache fits `max_cache_bytes`, and the cache's bytes per sample, measured
        on one sample."""
        if len(self.x) == 0:
            return batch_size, 0
        with torch.inference_mode():
            _, kept = call_model(prefix, self.x[:1])
        per_sample = max(1, tensor_bytes(kept))
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
            return int(fit), per_sample
        return batch_size, per_sample
