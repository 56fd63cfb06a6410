# Source of notebooks/07_label_free.ipynb: edit here, then run `python tools/make_notebooks.py 07`.

# %% [markdown]
# # 07 · Sensitivity without labels
#
# The sweeps of notebook 02 score a classifier by accuracy, which needs labels. Many models have none to
# give: an autoencoder returns an image, a detector boxes, an embedding model vectors, and the data you can
# feed a model is often just inputs. The question a sweep asks does not need labels, though: *how much does
# compressing this layer change what the model outputs?* So the workbench can score the compressed model
# against the **original model's outputs on the same inputs** (computed once per run, on a private copy):
#
# * `agreement`: the share of samples whose top class is still the original's (for class scores);
# * `psnr`: peak signal-to-noise ratio in dB, 10 log10(R² / MSE) with R the original outputs' range (for any
#   tensor: images, feature maps); identical outputs score 100 dB;
# * `mse`, `cosine`, `kl`: the same idea, other distances.
#
# `metric="auto"` (the default everywhere) picks accuracy where the data has labels and the model one
# `(N, classes)` output, agreement where every output is class scores, and PSNR otherwise. Every result
# names its metric and whether higher or lower is better; drops are taken in that direction.

# %%
# Setup: the repository root on the import path, figures saved inside the notebook, WORKBENCH_FAST=1 (set
# by the test suite) for fewer ratios and samples.
import os
import sys
import tempfile
from pathlib import Path

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "analysis" / "__init__.py").exists())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import plotly.io as pio

pio.renderers.default = "plotly_mimetype+notebook"
FAST = os.environ.get("WORKBENCH_FAST") == "1"
RATIOS = [0.25, 0.5, 0.75] if FAST else [0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9]
SAMPLES = 120 if FAST else 359

# %% [markdown]
# ## 1. Unlabelled data
#
# A `tensors:` file needs only the inputs: `x` for a single-input model (or one array per input, named after
# `forward`'s parameters). Here, the evaluation digits written to a file *without* their labels, as you might
# export a batch of real inputs from your own pipeline.

# %%
from safetensors.torch import save_file

from analysis import load_data

digits = load_data("digits")
folder = Path(tempfile.mkdtemp(prefix="workbench-label-free-"))
save_file({"x": digits.x[:SAMPLES].contiguous()}, str(folder / "inputs.safetensors"))
data = load_data(f"tensors:{folder / 'inputs.safetensors'}")
print(f"{len(data.x)} samples of shape {tuple(data.x.shape[1:])}, labels: {data.y}")

# %% [markdown]
# ## 2. A model with an image out: the denoising autoencoder
#
# `zoo:digits-autoencoder` takes a digit and returns a cleaned-up digit of the same shape: no classes, so
# `auto` scores it by PSNR against the original model. Evaluated alone, the model agrees with itself
# perfectly (100 dB); what matters is how far each compressed version falls from there.

# %%
from analysis import evaluate, load_model

autoencoder = load_model("zoo:digits-autoencoder")
baseline = evaluate(autoencoder, data)
print(baseline.to_dict())

# %% [markdown]
# The structured sweep removes each group's lowest-L1 channels at each ratio and scores the model in PSNR.
# The curves read like accuracy curves, in dB: flat near the top means the layer barely changes the output.

# %%
from analysis.report import charts, safe_points
from analysis import sensitivity_sweep

sweep = sensitivity_sweep(autoencoder, data, kind="structured", ratios=RATIOS)
print(f"metric: {sweep.metric.title}, {sweep.metric.direction} is better; {len(sweep.layers)} groups")
frame = sweep.to_frame()
charts.sensitivity_curves(frame, sweep.baseline_accuracy, score=sweep.metric).show()

# %%
charts.sensitivity_heatmap(frame, sweep.baseline_accuracy, score=sweep.metric).show()

# %% [markdown]
# Safe settings are read the same way as for accuracy, with drops in dB: a drop of 60 dB from the 100 dB of
# identical outputs keeps the output at 40 dB or better, 70 dB at 30 dB or better.

# %%
safe_points(sweep)

# %% [markdown]
# ## 3. A classifier on the same unlabelled inputs: agreement
#
# A classifier's outputs are class scores, so without labels `auto` scores it by **agreement** with the
# original's top class. Agreement is not accuracy (the original's mistakes count as right), but on a good
# model the two curves fall together, and agreement needs no labels at all. Here both sweeps of
# `zoo:digits-cnn`, on the same samples: with labels (accuracy) and without (agreement).

# %%
import pandas as pd

cnn = load_model("zoo:digits-cnn")
labelled = digits.subset(SAMPLES)
with_labels = sensitivity_sweep(cnn, labelled, kind="structured", ratios=RATIOS)
without = sensitivity_sweep(cnn, data, kind="structured", ratios=RATIOS)
print(f"with labels: {with_labels.metric.name}; without: {without.metric.name}")
side = pd.DataFrame(
    {
        "accuracy drop (labels)": [d for g in with_labels.layers for d in with_labels.drops(g)],
        "agreement drop (no labels)": [d for g in without.layers for d in without.drops(g)],
    },
    index=pd.MultiIndex.from_tuples(
        [(g, r) for g in with_labels.layers for r in RATIOS], names=["group", "ratio"]
    ),
)
(100 * side).round(1)  # in points

# %% [markdown]
# ## 4. Choosing the metric yourself
#
# `metric=` takes any name of the registry (`accuracy`, `top5`, `agreement`, `kl`, `mse`, `cosine`, `psnr`)
# or your own `module:callable`, a function `fn(output, reference, labels)` returning one score per sample.
# The command line takes the same as `--metric`, and so does the app's sidebar:

# %%
mse = sensitivity_sweep(autoencoder, data, kind="structured", ratios=RATIOS[:2], metric="mse")
print(f"{mse.metric.name}: {mse.metric.direction} is better; baseline {mse.baseline_accuracy:.3g}")
mse.to_frame().round(5)

# %%
import subprocess

command = [
    sys.executable,
    "-m",
    "analysis",
    "sensitivity",
    "--model",
    "zoo:digits-autoencoder",
    "--data",
    f"tensors:{folder / 'inputs.safetensors'}",
    "--ratios",
    "0.5",
    "--metric",
    "psnr",
    "--no-record",
    "--json",
    str(folder / "cli.json"),
]
print("$ python -m analysis " + " ".join(command[3:]))
done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
import json

cli = json.loads((folder / "cli.json").read_text())
print("exit status", done.returncode, "; metric:", cli["metric"])
print({group: entry["psnr"] for group, entry in cli["layers"].items()})
