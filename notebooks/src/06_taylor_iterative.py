# Source of notebooks/06_taylor_iterative.ipynb: edit here, then run `python tools/make_notebooks.py 06`.

# %% [markdown]
# # 06 · Iterative pruning with global Taylor ranking (Molchanov et al. 2017)
#
# Molchanov, Tyree, Karras, Aila and Kautz, "Pruning Convolutional Neural Networks for Resource Efficient
# Inference" (ICLR 2017), prune a VGG-16 iteratively:
#
# 1. score every feature map of the network by the first-order **Taylor** criterion,
#    |mean over positions of activation x gradient|, averaged over training samples;
# 2. **normalize** the scores within each layer by their L2 norm, so layers of different scale compete;
# 3. remove the **N lowest** feature maps of the whole network (globally, not per layer);
# 4. **fine-tune** for a few batches, and repeat until the cost target is met.
#
# They report VGG-16 3x faster at a quarter of the size for 1.2 points, and a figure showing which layers
# lose the most feature maps. This notebook runs the same procedure on `zoo:digits-cnn`, a VGG-style stack
# (four 3x3 conv + BN + ReLU, two max-pools, two linear layers), to one third of the MACs.

# %%
# Setup: the repository root on the import path, figures saved inside the notebook, WORKBENCH_FAST=1 (set
# by the test suite) for fewer samples, fewer steps and shorter fine-tuning.
import os
import sys
import warnings
from pathlib import Path

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "analysis" / "__init__.py").exists())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

pio.renderers.default = "plotly_mimetype+notebook"
warnings.filterwarnings("ignore", message="IProgress not found")  # captum imports tqdm.auto; no widgets here
FAST = os.environ.get("WORKBENCH_FAST") == "1"
STEPS = 3 if FAST else 8  # pruning iterations
EPOCHS_PER_STEP = 0.2 if FAST else 0.5  # fine-tuning between iterations, in passes over the training split
MAX_SAMPLES = 128 if FAST else 2048  # training samples the Taylor criterion averages over

# %%
from analysis import evaluate, load_data, load_model

model = load_model("zoo:digits-cnn")
data = load_data("digits")
if FAST:
    data = data.subset(300)
print(f"zoo:digits-cnn: accuracy {evaluate(model, data).accuracy:.2%}")

# %% [markdown]
# ## One global ranking, step by step
#
# `global_rank` does steps 1-3 once. A group of coupled layers (here each conv is its own group; in a
# residual network the convs tied by an addition form one) is scored as the sum over its members. The final
# classifier keeps its outputs: they are the classes. Below, the raw Taylor scores and the L2-normalized
# ones: without normalization, the layers with large activations would never lose a channel.

# %%
from analysis.compression.global_rank import global_rank
from analysis.transforms import find_groups

groups = find_groups(model, data.input_shape)
ranking = global_rank(model, groups, 32, criterion="taylor", normalize="l2", data=data, max_samples=MAX_SAMPLES)
frame = pd.DataFrame(
    [
        {"layer": name, "channel": c, "raw": float(ranking.scores[name][c]), "l2-normalized": float(v)}
        for name, values in ranking.normalized.items()
        for c, v in enumerate(values)
    ]
)
fig = make_subplots(rows=1, cols=2, subplot_titles=("raw Taylor score", "L2-normalized per layer"))
for i, column in enumerate(["raw", "l2-normalized"]):
    for layer, part in frame.groupby("layer", sort=False):
        fig.add_trace(go.Box(y=part[column], name=layer, showlegend=False), row=1, col=i + 1)
fig.update_yaxes(type="log")
fig.update_layout(height=380, title="Taylor scores per layer, before and after normalization")
fig.show()
print("the first 32 channels to go, per layer:", ranking.counts)

# %% [markdown]
# ## The iterative loop
#
# `run_schedule` with `method: iterative` repeats {rank on the training split, remove N, fine-tune} until
# the MACs target is met. N is the number of channels the first ranking needs for the target, divided by
# the number of steps; the last step removes whatever is still needed. Fine-tuning distills from the
# original model with a cosine learning-rate decay (the workbench's recovery recipe). Every step is
# recorded.

# %%
from analysis.compression.schedules import run_schedule

settings = {
    "method": "iterative",
    "criterion": "taylor",
    "normalize": "l2",
    "target": {"macs": 0.33},
    "steps": STEPS,
    "epochs_per_step": EPOCHS_PER_STEP,
    "finetune_epochs": 1 if FAST else 2,
    "max_samples": MAX_SAMPLES,
}
result = run_schedule(model, data, settings, progress=lambda done, total: print(f"step {done}/{total}", end="\r"))
trajectory = pd.DataFrame(result.trajectory)
trajectory["MACs (fraction)"] = trajectory.macs / trajectory.macs[0]
print()
print("target met:", result.met, "| notes:", result.notes)
trajectory[["step", "phase", "removed", "MACs (fraction)", "params", "accuracy", "loss", "seconds"]]

# %%
fig = make_subplots(specs=[[{"secondary_y": True}]])
fig.add_trace(go.Scatter(x=trajectory.step, y=trajectory.accuracy, name="accuracy", mode="lines+markers"))
fig.add_trace(
    go.Scatter(x=trajectory.step, y=trajectory["MACs (fraction)"], name="MACs (fraction)", mode="lines+markers"),
    secondary_y=True,
)
fig.update_yaxes(title="accuracy", tickformat=".0%", secondary_y=False)
fig.update_yaxes(title="MACs kept", tickformat=".0%", secondary_y=True)
fig.update_layout(height=380, title="Accuracy and MACs per step", xaxis_title="step")
fig.show()

# %% [markdown]
# ## Which layers lose the most filters
#
# Molchanov et al. found that the Taylor criterion prunes the layers close to the classifier hardest and
# keeps the early layers, which see the input at full resolution. The same count here, per layer, as a
# fraction of its original width:

# %%
first, last = result.trajectory[0]["channels"], result.trajectory[-1]["channels"]
final = max(first, key=list(first).index)  # the final classifier: its outputs are kept
kept = pd.DataFrame(
    [
        {"layer": name, "before": first[name], "after": last[name], "kept": last[name] / first[name]}
        for name in first
        if name != final
    ]
)
fig = px.bar(kept, x="layer", y="kept", text="after", height=360, title="Fraction of each layer's channels kept")
fig.update_yaxes(tickformat=".0%", range=[0, 1])
fig.show()
kept

# %% [markdown]
# ## What to take away
#
# - The ranking is global: the layers lose very different fractions of their channels, which a uniform
#   ratio cannot do.
# - L2 normalization is what makes the scores comparable across layers; try `"normalize": "none"` above
#   to see the ranking collapse onto the layers with the smallest activations.
# - `benchmarks/methods.py` compares this schedule with one-shot uniform and suggested plans, AGP, network
#   slimming and group lasso at the same MACs and the same training budget.
