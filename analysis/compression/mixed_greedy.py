"""The greedy search of a mixed suggestion: per unit, the cheapest next step (prune more, lower the rank, fewer
bits) until the budget is met, over each subset of the allowed methods."""

from __future__ import annotations


def mixed_greedy(units, saving, need: float, conflicts, allowed: set[str]):
    """Greedy moves until `saving(pos) >= need`: each move sets one unit to another of its options (and
    clears the units it conflicts with), choosing the least accuracy drop per unit saved, then loss
    increase per unit saved, then the larger saving. Once met, units are moved to cheaper options while
    the budget still holds (undoing the overshoot of the last jump)."""

    def cost(p):
        return (sum(units[u][i].drop for u, i in p.items()), sum(units[u][i].loss for u, i in p.items()))

    def move(p, u, j):
        trial = {**p, u: j}
        if j:
            for other in conflicts[u]:
                trial[other] = 0
        return trial

    pos = dict.fromkeys(units, 0)
    current, steps = saving(pos), []
    while current < need - 1e-9:
        (drop0, loss0), best, best_key = cost(pos), None, None
        for u, opts in units.items():
            for j, opt in enumerate(opts):
                if j == pos[u] or (j and opt.method not in allowed):
                    continue
                trial = move(pos, u, j)
                gained = saving(trial) - current
                if gained <= 1e-9:
                    continue
                drop1, loss1 = cost(trial)
                key = ((drop1 - drop0) / gained, (loss1 - loss0) / gained, -gained)
                if best_key is None or key < best_key:
                    best, best_key = (u, j, trial, gained), key
        if best is None:
            break
        u, j, pos, gained = best
        current += gained
        steps.append(
            {"unit": u[1], "method": units[u][j].method, "level": units[u][j].level, "saved": current}
        )
    if current >= need - 1e-9:
        while True:
            best, best_cost = None, cost(pos)
            for u, opts in units.items():
                for j in range(len(opts)):
                    if j == pos[u] or (j and opts[j].method not in allowed):
                        continue
                    trial = move(pos, u, j)
                    if saving(trial) >= need - 1e-9 and cost(trial) < best_cost:
                        best, best_cost = (u, j, trial), cost(trial)
            if best is None:
                break
            u, j, pos = best
            steps.append({"unit": u[1], "method": units[u][j].method or "none", "level": units[u][j].level,
                          "step_back": True})  # fmt: skip
    return pos, steps, saving(pos) >= need - 1e-9


def best_greedy(units, saving, need, conflicts, methods, notes):
    """The greedy over all methods; if it stalls short of the budget (a transform on a layer can block a
    group that would save more), rerun with each smaller set of methods and keep the best: the met run
    with the least predicted drop, or else the run that saves most."""
    import itertools

    runs = []
    for size in range(len(methods), 0, -1):
        for subset in itertools.combinations(methods, size):
            pos, steps, met = mixed_greedy(units, saving, need, conflicts, set(subset))
            runs.append((met, pos, steps, subset))
            if met and size == len(methods):
                return pos, steps, True
    met_runs = [r for r in runs if r[0]]
    if met_runs:
        best = min(met_runs, key=lambda r: sum(units[u][i].drop for u, i in r[1].items()))
        notes.append(
            f"the greedy over all methods stalled; methods {', '.join(best[3])} alone meet the budget"
        )
    else:
        best = max(runs, key=lambda r: saving(r[1]))
    return best[1], best[2], best[0]
