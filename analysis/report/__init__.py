"""Reports: the charts (the one place a figure is drawn), the HTML report, the csv/json/md writers, model
cards and the tables the plan editor and the Pareto front show."""

from analysis.report import charts
from analysis.report.bundle import report_files
from analysis.report.cards import ModelCard, cost_vs_time, model_card
from analysis.report.files import safe_points, write_csv, write_json, write_markdown
from analysis.report.html import build_full_report, build_report
from analysis.report.tables import (
    comparison_frame,
    pareto_front,
    pareto_table,
    plan_from_table,
    run_point,
    uniform_layer_table,
)
from analysis.report.weights import quantization_view, weight_histograms, weight_stats

__all__ = [
    "ModelCard",
    "build_full_report",
    "build_report",
    "charts",
    "comparison_frame",
    "cost_vs_time",
    "model_card",
    "pareto_front",
    "pareto_table",
    "quantization_view",
    "plan_from_table",
    "report_files",
    "run_point",
    "safe_points",
    "uniform_layer_table",
    "weight_histograms",
    "weight_stats",
    "write_csv",
    "write_json",
    "write_markdown",
]
