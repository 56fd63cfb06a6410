"""Metrics: how a model's outputs are scored, by name (docs/contract.md section 10.7).

One registry, `METRICS` (name -> class): `accuracy` and `top5` score class scores against labels;
`agreement`, `kl`, `mse`, `cosine` and `psnr` score each output against the ORIGINAL model's output on the
same inputs (its *reference*), so unlabelled data is enough. `module:callable` names your own. `auto`
picks: `accuracy` where the data has labels and the model has one `(N, classes)` output; else
`agreement` where every output is class scores; else `psnr`. A metric that compares several outputs scores
each and averages them.

A metric accumulates over batches (`update`) and gives one number (`value`); its `direction` says whether
higher or lower is better, and every drop is taken in that direction (`MetricInfo.drop`). Metrics whose
samples each score 0..1 (`accuracy`, `top5`, `agreement`) are `bounded`: a sweep can stop a layer early
knowing the best the remaining samples could do.

`Scoring` binds a metric to a data set and the original model: it resolves `auto`, computes the reference
outputs once per split on a private copy, and gives `MetricTally`s (metric plus loss) that evaluation fills.
The loss is cross-entropy against labels where they fit, else the divergence from the reference
(cross-entropy against its top-1 class for class scores, mean squared error otherwise).
"""

from analysis.metrics.base import AUTO, HIGHER, LOWER, PSNR_CAP_DB, Metric, MetricInfo
from analysis.metrics.builtin import (
    ACCURACY,
    METRIC_CHOICES,
    METRICS,
    MSE,
    PSNR,
    Accuracy,
    Agreement,
    Cosine,
    KLDivergence,
    Top5,
)
from analysis.metrics.registry import auto_metric, check_metric_name, get_metric, metric_choices
from analysis.metrics.scoring import (
    MetricTally,
    Reference,
    Scoring,
    batch_loss,
    compute_reference,
    per_sample_loss,
    score_value,
    scoring,
)

__all__ = [
    "ACCURACY",
    "AUTO",
    "HIGHER",
    "LOWER",
    "METRICS",
    "METRIC_CHOICES",
    "MSE",
    "PSNR",
    "PSNR_CAP_DB",
    "Accuracy",
    "Agreement",
    "Cosine",
    "KLDivergence",
    "Metric",
    "MetricInfo",
    "MetricTally",
    "Reference",
    "Scoring",
    "Top5",
    "auto_metric",
    "batch_loss",
    "check_metric_name",
    "compute_reference",
    "get_metric",
    "metric_choices",
    "per_sample_loss",
    "score_value",
    "scoring",
]
