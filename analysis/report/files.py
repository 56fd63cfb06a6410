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


def safe_points(result: SensitivityResult, drops: Sequence[float] = SAFE_DROPS) -> pd.DataFrame:
    """Per layer of a `SensitivityResult`: the largest safe ratio (pruning), smallest safe bits (quant,
    share) or smallest safe kept rank fraction (lowrank) at each accuracy drop in `drops` (0.01 = one point), the members of structured groups, and the drop
    at the sweep's most aggressive point."""
    rows = []
    for name, curve in result.layers.items():
        row: dict = {"layer": name}
        for drop in drops:
            label = {"quant": "min bits", "share": "min bits", "lowrank": "min kept rank"}.get(
                result.kind, "max ratio"
            )
            column = f"{label} @ {drop * 100:g} pt"
            row[column] = result.safe_point(name, drop)
        drops_here = result.drops(name)
        row["worst drop (pt)"] = round(max(drops_here) * 100, 2) if drops_here else float("nan")
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
    columns = ["layer", "kind"] + [c for c in ("ratio", "bits") if c in frame.columns] + ["accuracy", "loss"]
    return frame[columns]


def write_csv(results: SensitivityResult | Sequence[SensitivityResult], path: str | Path) -> Path:
    """Long form CSV: layer, kind, ratio (and/or bits), accuracy, loss; one row per swept point."""
    frame = _long_frame(as_list(results))
    return write_text_atomic(path, frame.to_csv(index=False))


def write_json(results: SensitivityResult | Sequence[SensitivityResult], path: str | Path) -> Path:
    """One result: its CONTRACT JSON; several: {"results": [...]}."""
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
            f"## {r.kind} ({len(r.layers)} {'groups' if r.kind == 'structured' else 'layers'}, {r.seconds:.1f} s)",
            "",
            f"Baseline: accuracy {r.baseline_accuracy:.4f}, loss {r.baseline_loss:.4f} ({r.samples} samples).",
            "",
        ]
        worst = sorted(r.layers, key=lambda n: -max(r.drops(n), default=0.0))[:top]
        if worst:
            lines.append(
                "Most sensitive: "
                + ", ".join(f"{n} (worst drop {max(r.drops(n)) * 100:.1f} points)" for n in worst)
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
