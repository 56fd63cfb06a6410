"""The report's plain files: CSV (long form), JSON and a short Markdown summary, each written atomically;
the safe-point table the app, the HTML report and the Markdown share (same labels everywhere)."""

from __future__ import annotations

import datetime as _dt
import math
import platform
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from analysis.io import to_json, write_text_atomic
from analysis.metrics import MetricInfo
from analysis.sensitivity.kinds import get_sweep_kind
from analysis.sensitivity.sweep import SensitivityResult

SAFE_DROPS = (0.01, 0.02)


def environment() -> dict[str, str | int]:
    """Where the numbers were measured: torch version, CPU, torch threads, date (UTC), Python."""
    try:
        from analysis.latency import cpu_name

        cpu = cpu_name()
    except ImportError:
        cpu = platform.processor() or platform.machine()
    return {
        "torch": torch.__version__,
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
    }


def as_list(sensitivity) -> list[SensitivityResult]:
    """None, one result or several, as a list."""
    if sensitivity is None:
        return []
    if isinstance(sensitivity, SensitivityResult):
        return [sensitivity]
    return list(sensitivity)


def safe_drops(metric: MetricInfo) -> tuple[float, ...]:
    """The drops a safe-point table uses for `metric`: 1 and 2 points for accuracy (`SAFE_DROPS`), the
    metric's own defaults otherwise (PSNR: 60 and 70 dB below the 100 dB of identical outputs)."""
    return SAFE_DROPS if metric.percent else tuple(metric.safe_drops)


def _drop_label(metric: MetricInfo, drop: float) -> str:
    return f"{drop * 100:g} pt" if metric.percent else f"{drop:g} {metric.unit or metric.name}"


def safe_points(result: SensitivityResult, drops: Sequence[float] | None = None) -> pd.DataFrame:
    """Per layer of a `SensitivityResult`: the largest safe ratio (pruning), smallest safe bits (quant,
    share) or smallest safe kept rank fraction (lowrank) at each drop in `drops` (in the sweep's metric:
    0.01 = one point of accuracy; default `safe_drops(result.metric)`), the members of structured groups,
    and the drop at the sweep's most aggressive point."""
    metric = result.metric
    drops = safe_drops(metric) if drops is None else drops
    worst = "worst drop (pt)" if metric.percent else f"worst drop ({metric.unit or metric.name})"
    label = get_sweep_kind(result.kind).safe_label
    rows = []
    for name, curve in result.layers.items():
        row: dict = {"layer": name}
        for drop in drops:
            column = f"{label} @ {_drop_label(metric, drop)}"
            row[column] = result.safe_point(name, drop)
        drops_here = result.drops(name)
        scale = 100 if metric.percent else 1
        row[worst] = (
            round(max(drops_here) * scale, 2 if metric.percent else 4) if drops_here else float("nan")
        )
        if curve.members is not None:
            row["members"] = ", ".join(curve.members)
        rows.append(row)
    return pd.DataFrame(rows)


safe_ratio_table = safe_points  # the name the report used before the app's labels became the only ones


def _long_frame(results: Sequence[SensitivityResult]):
    import pandas as pd

    frames = [r.to_frame() for r in results]
    if not frames:
        return pd.DataFrame(columns=["layer", "kind", "ratio", "accuracy", "loss"])
    frame = pd.concat(frames, ignore_index=True)
    scores = list(dict.fromkeys(r.metric.name for r in results))
    columns = ["layer", "kind"] + [c for c in ("ratio", "bits") if c in frame.columns] + [*scores, "loss"]
    return frame[columns]


def write_csv(results: SensitivityResult | Sequence[SensitivityResult], path: str | Path) -> Path:
    """Long form CSV: layer, kind, ratio (and/or bits), the score (a column named after the metric:
    `accuracy`, `psnr`), loss; one row per swept point."""
    frame = _long_frame(as_list(results))
    return write_text_atomic(path, frame.to_csv(index=False))


def write_json(results: SensitivityResult | Sequence[SensitivityResult], path: str | Path) -> Path:
    """One result: its JSON (docs/contract.md section 3); several: {"results": [...]}."""
    items = as_list(results)
    payload = items[0].to_dict() if len(items) == 1 else {"results": [r.to_dict() for r in items]}
    return write_text_atomic(path, to_json(payload))


def _md_table(frame) -> str:
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def markdown_summary(
    results: SensitivityResult | Sequence[SensitivityResult], title: str = "Sensitivity", top: int = 5
) -> str:
    """A short Markdown summary: baseline, the most sensitive layers, the safe-ratio table per kind."""
    env = environment()
    lines = [
        f"# {title}",
        "",
        f"torch {env['torch']}, {env['cpu']}, {env['threads']} threads, {env['date']}",
        "",
    ]
    for r in as_list(results):
        lines += [
            f"## {r.kind} ({len(r.layers)} {get_sweep_kind(r.kind).unit}, {r.seconds:.1f} s)",
            "",
            f"Baseline: {r.metric.name} {r.baseline_accuracy:.4f}, loss {r.baseline_loss:.4f} ({r.samples} samples).",
            "",
        ]
        worst = sorted(r.layers, key=lambda n: -max(r.drops(n), default=0.0))[:top]
        if worst:
            lines.append(
                "Most sensitive: "
                + ", ".join(f"{n} (worst drop {r.metric.format_drop(max(r.drops(n)))})" for n in worst)
            )
            lines.append("")
        lines += [_md_table(safe_ratio_table(r)), ""]
        lines += [f"> {note}" for note in r.notes]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(
    results: SensitivityResult | Sequence[SensitivityResult], path: str | Path, title: str = "Sensitivity"
) -> Path:
    return write_text_atomic(path, markdown_summary(results, title))
