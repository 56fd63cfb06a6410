# Source of notebooks/03_importance.ipynb: edit here, then run `python tools/make_notebooks.py 03`.

# %% [markdown]
# # 03 · Importance: which channels to remove
#
# Notebook 02 told us *how many* channels each layer can lose. Structured pruning also has to decide
# *which* ones. An **importance criterion** gives every output channel of a layer a score, and pruning
# removes the lowest-scoring channels first.
#
# What we would really like to know is the **oracle**: how much the loss changes when a channel is removed.
# It can be measured directly (zero the channel after its norm, evaluate, put it back), but that costs one
# evaluation per channel, for every layer, every time the model changes. Every criterion below is a cheaper
# stand-in for it, and this notebook measures how good a stand-in each one is on this model.
#
# ## A short lineage
#
# * **LeCun, Denker & Solla (1990), *Optimal Brain Damage*.** Instead of deleting parameters and measuring,
#   *estimate* the loss change with a Taylor expansion of the loss: at a trained minimum the first-order
#   term vanishes, so OBD used the diagonal of the Hessian (second order). Every "cheap estimate of the
#   oracle" criterion descends from this idea.
# * **Li et al. (2017), *Pruning Filters for Efficient ConvNets*.** The simplest possible proxy: a filter with
#   a small L1 norm produces small outputs, so rank filters by `‖W‖₁` (`l1`; `l2` is the same with `‖W‖₂`).
#   Weights only, no data.
# * **He et al. (2019), *Filter Pruning via Geometric Median* (FPGM).** Small-norm filters are not
#   necessarily useless, and norms say nothing about redundancy. FPGM prunes the filters closest to the
#   layer's geometric median: the ones the other filters can best stand in for (`fpgm`). Weights only.
# * **Liu et al. (2017), *Network Slimming*.** Batch-norm multiplies each channel by a learned scale γ; a
#   channel with a small |γ| is scaled towards nothing. Slimming trains with an L1 penalty on γ to push
#   unneeded channels there; here we read |γ| of the trained model (`bn-scale`), which exists only for
#   layers followed by a norm.
# * **Hu et al. (2016), *Network Trimming* (APoZ).** Look at the data: a channel that is zero after its ReLU
#   for most inputs and positions carries little. APoZ is that fraction of zeros, so here a *high* score
#   means *prune first* (`apoz`). The mean activation (`mean-activation`) is the related, simpler
#   statistic.
# * **Molchanov et al. (2017), *Pruning Convolutional Neural Networks for Resource Efficient Inference*.**
#   Back to OBD's idea, at first order and per feature map: the loss change of removing activation `a` is
#   about `a · ∂L/∂a`. Summed over positions, taken in absolute value and averaged over samples, it costs one
#   backward pass (`taylor`). Unlike OBD's parameter view, a single sample's gradient is not zero, which is
#   why the first-order term is used per sample before averaging.
#
# The data-driven criteria (APoZ, mean activation, Taylor, oracle) are measured on the training split, on
# each channel's feature map after its norm (and after its activation for APoZ and mean activation).

# %%
# Setup: the repository root on the import path, figures saved inside the notebook, WORKBENCH_FAST=1 (set
# by the test suite) for smaller sample caps.
import os
import sys
import warnings
from pathlib import Path

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "analysis" / "__init__.py").exists())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.io as pio

pio.renderers.default = "plotly_mimetype+notebook"
pd.set_option("display.max_colwidth", None)
FAST = os.environ.get("WORKBENCH_FAST") == "1"
# Training samples the data-driven criteria and the oracle see: the library's default, 2,048 (all 1,438
# training digits here). The test suite's 64 only checks that the notebook runs; its scores are noisier.
MAX_SAMPLES = 64 if FAST else 2048
warnings.filterwarnings("ignore", message="IProgress not found")  # captum imports tqdm.auto; no widgets here

# %%
from analysis import load_data, load_model
from analysis import IMPORTANCE_CRITERIA, get_importance

model = load_model("zoo:digits-cnn")
data = load_data("digits")
rows = []
for name in IMPORTANCE_CRITERIA:
    criterion = get_importance(name)
    rows.append(
        {
            "criterion": name,
            "class": type(criterion).__name__,
            "needs data": criterion.data_driven,
            "higher = keep": criterion.higher_is_important,
            "what it measures": (type(criterion).__doc__ or "").strip().splitlines()[0],
        }
    )
pd.DataFrame(rows).set_index("criterion")

# %% [markdown]
# A criterion is a callable: give it the model (and data, if it needs any) and it returns one score per
# output channel for each prunable layer. It only returns numbers; removing channels is a separate step.

# %%
l1 = get_importance("l1")(model)
for layer, scores in l1.items():
    print(f"{layer:13s} {len(scores):4d} channels   L1 from {scores.min():.3f} to {scores.max():.3f}")

# %% [markdown]
# ## Every criterion, and the oracle, in one call
#
# `rank_channels` scores every channel of every prunable layer by every criterion: the weight criteria
# directly, the activation criteria in one shared pass over the data, and the oracle last (one evaluation
# per channel, so it dominates the time).

# %%
from analysis import rank_channels

ranking = rank_channels(model, data, max_samples=MAX_SAMPLES, oracle=True)
print(
    f"{ranking.samples} calibration samples, {ranking.oracle_samples} samples per oracle evaluation, {ranking.seconds:.1f} s"
)
for note in ranking.notes:
    print("note:", note)
scores = ranking.to_frame()
scores.head()

# %% [markdown]
# ## What the oracle says: a few channels matter, most do not
#
# Sort each layer's channels by their oracle score. If every channel mattered equally, the curves would be
# flat; pruning works because they are not.

# %%
oracle = scores[["layer", "channel", "oracle"]].copy()
oracle["rank"] = oracle.groupby("layer").oracle.rank(ascending=False, method="first")
oracle["share of channels"] = oracle["rank"] / oracle.groupby("layer").channel.transform("count")
fig = px.line(
    oracle.sort_values(["layer", "rank"]),
    x="share of channels",
    y="oracle",
    color="layer",
    log_y=True,
    height=380,
    title="Oracle: |loss change| when one channel is removed, channels sorted per layer",
)
fig.update_xaxes(tickformat=".0%")
fig.update_yaxes(title="|Δ loss| (nats)")
fig.show()
top = oracle.sort_values("oracle", ascending=False).groupby("layer").oracle
share_top = (
    top.apply(lambda s: s.head(max(1, len(s) // 10)).sum()) / oracle.groupby("layer").oracle.sum()
).reindex(list(ranking.layers))
free = (oracle.oracle == 0).groupby(oracle.layer).sum().reindex(list(ranking.layers))
print("share of each layer's summed oracle score held by its top 10% of channels, and channels whose removal")
print("changes the loss by exactly zero (typically channels that are zero after their ReLU on every sample):")
for layer in share_top.index:
    print(f"  {layer:13s} top 10%: {share_top[layer]:4.0%}   no effect: {free[layer]} channels")

# %% [markdown]
# ## How the criteria's scores are distributed
#
# Criteria live on different scales (a norm, a fraction, a gradient product), so to compare shapes each
# layer's scores are divided by their largest value. A criterion can only separate channels where its scores
# spread out; one that gives every channel in a layer nearly the same score ranks them almost at random.

# %%
criteria = [c for c in ranking.criteria if c != "oracle"]
long = scores.melt(
    id_vars=["layer", "channel"], value_vars=criteria, var_name="criterion", value_name="score"
).dropna()
long["relative score"] = long.score / long.groupby(["layer", "criterion"]).score.transform(
    lambda s: s.abs().max()
)
fig = px.box(
    long,
    x="criterion",
    y="relative score",
    color="layer",
    points=False,
    height=420,
    title="Scores within each layer, divided by the layer's largest",
)
fig.show()

# %% [markdown]
# ## Agreement with the oracle
#
# The question that matters for pruning is whether a criterion *orders* channels the way the oracle does.
# Spearman's rank correlation ρ measures exactly that: 1 is the same order, 0 no relation, −1 the reverse.
# Each criterion is taken in its importance direction, so APoZ is negated. Per layer, ρ is computed over
# that layer's channels; the **pooled** row ranks all channels of all layers together after dividing each
# criterion's scores by their L2 norm within the layer (the normalisation Molchanov et al. use), which is
# what a *global* pruning threshold relies on. Layers where a criterion is undefined (`bn-scale` without a
# norm) or constant are left out.

# %%
from analysis.report import charts  # the figures the app and the HTML report draw

rho = ranking.spearman_frame()
charts.matrix_heatmap(rho, "Spearman ρ with the oracle (per layer, mean over layers, pooled)", "ρ").show()
best_mean = rho.loc["mean per layer"].idxmax()
best_pooled = rho.loc["pooled"].idxmax()
print(f"best mean per-layer agreement: {best_mean} (ρ = {rho.loc['mean per layer', best_mean]:.2f})")
print(f"best pooled agreement:         {best_pooled} (ρ = {rho.loc['pooled', best_pooled]:.2f})")

# %% [markdown]
# Spearman weighs every position in the order equally, but pruning only cares about the bottom of it: the
# channels removed first. The **top-k overlap** compares exactly those: for two criteria, the Jaccard overlap
# of the quarter of each layer's channels each would prune first, averaged over layers (1 = the same
# channels).

# %%
overlap = ranking.topk_frame()
title = f"Overlap of the {ranking.topk_fraction:.0%} of channels each criterion prunes first"
charts.matrix_heatmap(overlap, title, "Jaccard", zmin=0.0, zmax=1.0).show()

# %% [markdown]
# ## Reading the results
#
# The heatmaps above are this model's answer, on this data, with these sample caps; a different model can
# rank the criteria differently, which is the reason to measure rather than pick a favourite. A few
# things hold in general and are worth checking against the numbers:
#
# * The weight criteria (`l1`, `l2`, `fpgm`) agree closely with *each other* (see the overlap matrix): they
#   look at the same weights. Whether they agree with the oracle depends on whether weight size tracks
#   usefulness in that layer, which it need not after batch-norm rescales every channel.
# * `taylor` is the only criterion that estimates the oracle's quantity itself (a loss change), so it tends
#   to track it best; it costs a forward and backward pass over the calibration samples.
# * **Pooled** ρ can be high while per-layer ρ is low: pooled agreement is dominated by telling *layers*
#   apart (some layers' channels all matter more), per-layer agreement by ordering channels *within* a
#   layer. A global threshold needs the first, per-layer ratios (notebook 02's approach) only the second.
# * The oracle itself removes one channel at a time. Removing many interacts, which is why pruning is
#   followed by fine-tuning (notebook 04), and why a criterion with moderate ρ can still prune well.
#
# The command line gives the same table: `python -m analysis rank --model zoo:digits-cnn --data digits`
# writes the scores per layer and criterion and `spearman_vs_oracle`.
