# Source of notebooks/02_sensitivity.ipynb: edit here, then run `python tools/make_notebooks.py 02`.

# %% [markdown]
# # 02 · Sensitivity: how much can each layer take?
#
# Layers are not equally important. Some can lose most of their weights without the model noticing; in
# others, a little damage ruins the output. A **sensitivity sweep** measures this directly: compress *one*
# layer at a time, at several strengths, evaluate the whole model, and plot accuracy (and loss) against
# strength. The curves then tell you how hard to compress each layer. This is the analysis Distiller made
# popular, and the one NNI dropped in its 3.0 release.
#
# The sweep answers three different questions, one per kind of compression:
#
# * **Unstructured pruning** zeroes individual weights: at ratio *r*, the `round(r · numel)` weights of
#   smallest magnitude. The layer keeps its shape; it just holds zeros. Storage can shrink (a sparse format),
#   but a dense matrix multiply does the same work on a zero as on any other number, so **unstructured
#   sparsity does not make dense kernels faster** (notebook 04 measures it).
# * **Structured pruning** removes whole output channels (conv filters, linear neurons): at ratio *r*, the
#   `round(r · C_out)` channels of lowest importance. The layer and the ones reading its output become
#   genuinely smaller dense layers, so MACs and latency drop. It is much coarser, so it usually costs more
#   accuracy at the same ratio.
# * **Quantization** keeps every weight but stores it in fewer bits: symmetric, per output channel, uniform
#   levels (`2^(b-1) - 1` each side of zero). The sweep goes down in bits: 8, 6, 4, 3, 2.
#
# The sweeps only edit and restore the layer in place, and recompute only the part of the network after it,
# so a full sweep of this model takes seconds.

# %%
# Setup: the repository root on the import path, figures saved inside the notebook, WORKBENCH_FAST=1 (set
# by the test suite) for fewer ratios and samples.
import os
import sys
from pathlib import Path

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "analysis" / "__init__.py").exists())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import plotly.io as pio

pio.renderers.default = "plotly_mimetype+notebook"
FAST = os.environ.get("WORKBENCH_FAST") == "1"
RATIOS = [0.25, 0.5, 0.75, 0.9] if FAST else [0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9]
BITS = [8, 4, 3, 2] if FAST else [8, 6, 4, 3, 2]

# %%
from analysis import evaluate, load_data, load_model, summarize

model = load_model("zoo:digits-cnn")
data = load_data("digits")
if FAST:
    data = data.subset(200)  # the test suite evaluates on the first 200 digits only
baseline = evaluate(model, data)
print(
    f"zoo:digits-cnn on digits: accuracy {baseline.accuracy:.2%}, loss {baseline.loss:.4f} ({baseline.samples} samples)"
)

# %% [markdown]
# ## 1. Unstructured pruning, layer by layer
#
# `sensitivity_sweep` takes the model, the data, the kind of compression and the ratios; `layers=` would
# restrict it to some layers (by default, every `Conv` and `Linear`). It never changes the model it is
# given. `progress` is a callback `(done, total)`; the app turns it into a progress bar.

# %%
from analysis.report import charts
from analysis import sensitivity_sweep

unstructured = sensitivity_sweep(model, data, kind="unstructured", ratios=RATIOS)
print(f"{len(unstructured.layers)} layers x {len(RATIOS)} ratios in {unstructured.seconds:.1f} s")
unstructured.to_frame().head(8)


# %%
def plot_curves(result, metric="accuracy", title=""):
    """One line per layer (or group): accuracy or loss against ratio or bits, baseline dashed; the same
    figure function the app and the HTML report use (`analysis.charts`)."""
    base = result.baseline_accuracy if metric == "accuracy" else result.baseline_loss
    return charts.sensitivity_curves(result.to_frame(), base, title, metric=metric)


plot_curves(unstructured, title="Unstructured pruning: accuracy with one layer pruned").show()

# %% [markdown]
# ### Reading the curves
#
# Each curve starts flat at the baseline and, sooner or later, falls off a cliff. Two things matter:
# **where the cliff starts** (the ratio a layer tolerates) and **how steep it is** (how much a wrong guess
# costs). Typical patterns, which you can check against the chart:
#
# * The **first convolution** has few weights and every later feature is built from its output, so there is
#   little redundancy to remove: it is usually the most sensitive layer.
# * The **big fully connected layer** holds most of the parameters and is highly redundant: it often
#   tolerates very high ratios.
# * The **output layer** maps features to classes; each of its weights matters to one class, so it falls
#   once the pruning reaches the weights that carry signal.
#
# Accuracy moves in steps of one sample and hides small damage. The loss moves continuously and shows the
# damage starting earlier, which makes it the better signal near the flat part of a curve:

# %%
plot_curves(
    unstructured, metric="loss", title="Unstructured pruning: loss with one layer pruned"
).update_yaxes(type="log").show()

# %% [markdown]
# ## 2. Structured pruning, and why coupled layers go together
#
# Removing output channel *k* of a convolution does not stop at that layer. Its batch-norm has a scale and
# shift for channel *k*, which must go too, and the next convolution has input channel *k* in every one of its
# filters, which must go too. Structured pruning therefore acts on a **group**: the layer whose outputs are
# removed and every layer coupled to them. The sweep names each group by its first layer and lists its
# members.
#
# The sweep ranks channels by their L1 norm (summed over the group) and simulates removal by zeroing each
# channel *after* its norm; that gives exactly the outputs physical removal would (zeroing before the norm
# would not, because the norm's shift would turn the zeros into a constant).

# %%
structured = sensitivity_sweep(model, data, kind="structured", ratios=RATIOS)
for group, curve in structured.layers.items():
    print(f"group {group:13s} members: {', '.join(curve.members)}")
plot_curves(structured, title="Structured pruning: accuracy with one group's channels removed").show()

# %% [markdown]
# Compare the two kinds on the same layer and ratio. Structured pruning removes whole channels, the
# important weights in them included, so it usually costs more accuracy than zeroing the same fraction of
# individually chosen small weights:

# %%
import pandas as pd

side = pd.DataFrame(
    {
        "unstructured": unstructured.to_frame().set_index(["layer", "ratio"]).accuracy,
        "structured": structured.to_frame().set_index(["layer", "ratio"]).accuracy,
    }
).dropna()
(100 * side.unstack("ratio")).round(1)  # accuracy in %, columns: kind and ratio

# %% [markdown]
# ### Residual networks: groups that span blocks
#
# In a residual network, `out = block(x) + x` adds two tensors channel by channel. If one side loses channel
# *k*, the other side must lose the same channel, and so must every other block that adds into the same
# stream. Those layers form one group, however far apart they sit. Pruning one of them on its own either
# breaks the add or, in a tool that zeroes weights without tracking the coupling, makes the layer look robust:
# the untouched other branch still carries channel *k*. The workbench traces the graph, so
# `zoo:digits-resnet`'s groups come out like this (the sweep restricted to two of them, to keep it short):

# %%
resnet = load_model("zoo:digits-resnet")
resnet_groups = sensitivity_sweep(
    resnet, data, kind="structured", ratios=RATIOS, layers=["conv1", "layer1.0.conv1"]
)
for group, curve in resnet_groups.layers.items():
    print(f"group {group} ({len(curve.members)} layers): {', '.join(curve.members)}")
plot_curves(resnet_groups, title="digits-resnet: a residual-stream group vs a block-internal group").show()

# %% [markdown]
# The first group is the residual stream of the first stage: the stem convolution, every block's last
# convolution that adds into the stream, and the layers that read from it. Its curve prices pruning the
# stream as a whole, which is the only way it can be pruned. The second is a block's inner convolution,
# coupled only to its norm and the next convolution.
#
# ## 3. Quantization
#
# Quantization sweeps go down in bits. Eight bits is nearly lossless for almost every layer; the interesting
# part is where each layer breaks below that.

# %%
quant = sensitivity_sweep(model, data, kind="quant", bits=BITS)
plot_curves(quant, title="Weight quantization: accuracy with one layer's weights at b bits").show()
print("smallest bit width within 1 point of the baseline, per layer:")
for layer in quant.layers:
    print(f"  {layer:13s} {quant.min_safe_bits(layer, max_drop=0.01)}")

# %% [markdown]
# ## 4. Choosing ratios from the curves
#
# A simple rule: pick a tolerated accuracy drop, and for each layer take the largest swept ratio up to which
# *every* swept point stays within it (`max_safe_ratio`). Then weigh what that buys. Removing a fraction *r*
# of a group's channels thins every member by *r*: the layer loses that share of its outputs and the next
# layer the same share of its inputs. So the MACs saved are about *r* times the MACs of the group's
# convolutions and linear layers, and a high ratio on a group that does few MACs saves little, while a
# moderate one on a group that does most of them saves a lot:

# %%
MAX_DROP = 0.01  # one accuracy point
summary = summarize(model, data.input_shape)
macs = summary.to_frame().set_index("name").macs
rows = []
for group, curve in structured.layers.items():
    safe = structured.max_safe_ratio(group, MAX_DROP)
    thinned = sum(int(macs.get(m, 0)) for m in curve.members) / summary.total_macs
    rows.append(
        {
            "group": group,
            "safe unstructured ratio": unstructured.max_safe_ratio(group, MAX_DROP),
            "safe structured ratio": safe,
            "share of MACs it thins": thinned,
            "share of MACs saved at the safe ratio": safe * thinned,
        }
    )
choice = pd.DataFrame(rows).set_index("group")
choice.round(3)

# %% [markdown]
# Three cautions before turning the table into a plan:
#
# 1. **Each curve prunes one layer alone.** Pruned together, the damage adds up (and sometimes compounds),
#    so a plan that takes every layer to its individual limit usually drops further than the tolerance.
#    Leave a margin, or sweep again after pruning.
# 2. **The curves are measured before fine-tuning.** A short fine-tune (notebook 04) recovers much of the
#    loss, so curves are best read as a *ranking* of layers and a rough scale, not a final answer.
# 3. **The swept grid is coarse.** The safe ratio is the largest *swept* point within the tolerance; the
#    true limit lies somewhere before the next point.
#
# `suggest_plan` in notebook 04 does this weighing for a target (a MACs or latency budget).
#
# ## 5. Exporting
#
# A sweep is plain data: `to_dict()` is the command line's JSON (`python -m analysis sensitivity ...`
# writes the same keys), `to_frame()` a pandas table, and `analysis.report` writes a self-contained HTML page
# and a CSV you can attach to a pull request or open in a spreadsheet.

# %%
import json
import tempfile

from analysis import build_report, write_csv, write_json

out = Path(tempfile.mkdtemp(prefix="workbench-sensitivity-"))
html_path = build_report(
    model,
    data,
    out / "sensitivity.html",
    sensitivity=[unstructured, structured, quant],
    model_spec="zoo:digits-cnn",
    data_spec="digits",
)
csv_path = write_csv([unstructured, structured, quant], out / "sensitivity.csv")
json_path = write_json(structured, out / "structured.json")
for path in (html_path, csv_path, json_path):
    print(f"{path.name:16s} {path.stat().st_size / 1024:8.1f} KiB")
payload = json.loads(json_path.read_text())
print(
    "\nJSON keys:",
    list(payload),
    "\none group:",
    {k: payload["layers"]["features.3"][k] for k in ("ratios", "members")},
)
print("\nCSV, first lines:\n" + "\n".join(csv_path.read_text().splitlines()[:4]))

# %% [markdown]
# The HTML report holds the curves, a heatmap of layers by ratio and the safe-ratio tables, with plotly's
# JavaScript inlined so it opens offline. The command line runs the same sweep and writes the same files;
# here it is, run from this notebook:

# %%
import subprocess

command = [
    sys.executable,
    "-m",
    "analysis",
    "sensitivity",
    "--model",
    "zoo:digits-cnn",
    "--data",
    "digits",
    "--kind",
    "structured",
    "--ratios",
    "0.25,0.5,0.75",
    "--layers",
    "features.3",
    "--limit",
    str(len(data.x)),
    "--json",
    str(out / "cli.json"),
    "--csv",
    str(out / "cli.csv"),
]
print("$ python -m analysis " + " ".join(command[3:]))
done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
print("exit status", done.returncode, done.stderr.strip().splitlines()[-1:] if done.returncode else "")
cli = json.loads((out / "cli.json").read_text())
print("features.3 from the command line:", cli["layers"]["features.3"]["accuracy"])
print(
    "features.3 from this notebook:   ",
    [
        a
        for r, a in zip(structured.layers["features.3"].values, structured.layers["features.3"].accuracy)
        if r in (0.25, 0.5, 0.75)
    ],
)
