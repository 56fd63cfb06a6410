"""Automated gradual pruning (Zhu & Gupta 2017, "To prune, or not to prune"): the pruned fraction follows
s_t = s_f + (s_i - s_f)(1 - t/n)^3, t = 1..n, with training between steps.

As in the paper, the schedule is per layer: at step t every layer is pruned to s_t of its own size.
- Structured: every coupled channel group loses round(s_t x its original channels), its least important
  ones by the schedule's criterion; s_f is the uniform fraction that meets the target (MACs, params,
  channels; latency through MACs and the measured correction), found by bisection on pruned copies.
  (A global ranking across groups, used here before, cut the widest groups to their floor to meet a MAC
  target, because their channels are cheap and L2-normalised scores shrink with width: digits-resnet's
  last stage went 64 -> 6 channels, and the accuracy from 99.4% to 76-83%.)
- Unstructured (`structured: false`): s is the fraction of prunable weights zeroed by global magnitude
  (`torch.nn.utils.prune.global_unstructured`), target `params` = the fraction of those weights kept.

`run` is the schedule's state (`analysis.compression.schedules._Run`).
"""

from __future__ import annotations

from torch.nn.utils import prune as torch_prune

from analysis.importance import group_scores
from analysis.transforms.pruning import make_permanent

BISECTION_STEPS = 10  # the uniform final fraction to 1/1024: finer than one channel of a 512-wide layer


def agp_sparsity(step: int, steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's cubic schedule: s_t = s_f + (s_i - s_f)(1 - t/n)^3, for t in [0, n]."""
    t = min(max(step, 0), steps)
    return final + (initial - final) * (1.0 - t / steps) ** 3


def agp_unstructured(run, report) -> None:
    s = run.s
    final = 1.0 - run.target_fraction
    layers = run.prunable_weights(run.work)
    total = sum(w.numel() for _, w in layers)
    for t in range(1, s.steps + 1):
        run.check_stop()
        run.step = t
        sparsity = agp_sparsity(t, s.steps, final, s.initial_sparsity)
        make_permanent(run.work)  # zeros stay zero; they are the smallest |w|, so the next mask keeps them
        params = [(run.work.get_submodule(n), "weight") for n, _ in layers]
        torch_prune.global_unstructured(
            params, pruning_method=torch_prune.L1Unstructured, amount=round(sparsity * total)
        )
        loss = run.train_epochs(s.epochs_per_step)
        run.record("agp", loss, removed=round(sparsity * total))
        report(t)
    make_permanent(run.work)


def _removal(run, groups, fraction: float, scores=None) -> list[tuple[str, int]]:
    """The channels to remove so that every group is down to (1 - fraction) of its ORIGINAL channels (never
    below its floor): each group's least important ones first, as a removal order."""
    scores = (
        scores
        if scores is not None
        else group_scores(run.work, groups, run.s.criterion, run.data, run.s.max_samples)
    )
    order: list[tuple[str, int]] = []
    for g in groups:
        original = run.original_channels.get(g.name, g.channels)
        keep = max(run.floors.get(g.name, 1), original - round(fraction * original))
        k = max(0, g.channels - keep)
        ranked = scores[g.name].argsort(stable=True)[:k].tolist()
        order += [(g.name, int(c)) for c in ranked]
    return order


def _uniform_fraction(run, goal: float) -> float:
    """The smallest uniform pruned fraction whose model keeps at most `goal` of the target quantity
    (bisection on pruned copies of the current model; the largest fraction the floors allow if none does)."""
    groups, kind = run.current_groups(), run.s.target_kind
    scores = group_scores(run.work, groups, "l1")  # which channels go does not change the count much
    low, high = 0.0, 1.0 - run.s.min_fraction

    def fits(fraction: float) -> bool:
        order = _removal(run, groups, fraction, scores)
        return run.fraction(run.pruned_copy(groups, order, len(order)), kind) <= goal + 1e-9

    if not fits(high):
        return high
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        low, high = (low, mid) if fits(mid) else (mid, high)
    return high


def agp_structured(run, report, extra_steps: int) -> None:
    """Per-group AGP: the uniform final fraction s_f meeting the target, then `steps` steps of the cubic
    schedule, training `epochs_per_step` after each; with a latency target, up to `extra_steps` more steps
    at the fraction the measured latency asks for, until it is met."""
    s = run.s
    final = _uniform_fraction(run, run.target_fraction)
    for t in range(1, s.steps + extra_steps + 1):
        if t > s.steps:  # latency only: the MACs behind the goal did not give the latency asked for
            if run.met():
                break
            final = max(final, _uniform_fraction(run, run.target_fraction))
        run.check_stop()
        run.step = t
        fraction = agp_sparsity(min(t, s.steps), s.steps, final, s.initial_sparsity)
        groups = run.current_groups()
        order = _removal(run, groups, fraction)
        removed = run.remove(groups, order, len(order))
        loss = run.train_epochs(s.epochs_per_step)
        run.record("agp", loss, removed)
        report(t)
