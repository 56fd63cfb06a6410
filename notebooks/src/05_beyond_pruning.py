# Source of notebooks/05_beyond_pruning.ipynb: edit here, then run `python tools/make_notebooks.py 05`.

# %% [markdown]
# # 05 · Beyond pruning: low rank, weight sharing, binary and ternary weights
#
# Pruning removes weights and uniform quantization stores them in fewer bits. The surveys of the field list
# three more families, each with its own trade-off:
#
# 1. **Low-rank factorization** (SVD): a layer's weight matrix W (out x in) is replaced by two thinner
#    layers whose product is the best rank-r approximation of W. A real structural change: parameters, MACs
#    and latency all fall.
# 2. **Weight sharing** (Han, Mao and Dally, *Deep Compression*, 2016): the weights of a layer are clustered
#    into 2^b values by k-means; each weight stores a b-bit index into that codebook, and the indices are then
#    **Huffman-coded**. Only storage shrinks; the network computes the same way.
# 3. **Binary, ternary and power-of-two weights** (BinaryConnect / XNOR-Net, TWN, INQ): one or two bits per
#    weight, or weights that are powers of two. Here they are *simulated*: the weights are float tensors
#    holding those values, and the sizes are counted at their bit width.
#
# Each has a sensitivity curve, measured the same way as notebook 02's, so you can see which transform a
# layer tolerates best.

# %%
# Setup: the repository root on the import path, figures saved inside the notebook, WORKBENCH_FAST=1 (set
# by the test suite) for fewer samples and less fine-tuning.
import os
import sys
from pathlib import Path

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "analysis" / "__init__.py").exists())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import torch

pio.renderers.default = "plotly_mimetype+notebook"
FAST = os.environ.get("WORKBENCH_FAST") == "1"
RETRAIN_EPOCHS = 1 if FAST else 2  # retraining after pruning, in the Deep Compression pipeline

# %%
from analysis import count_macs, evaluate, load_data, load_model

model = load_model("zoo:digits-cnn")
data = load_data("digits")
if FAST:
    data = data.subset(300)
baseline = evaluate(model, data)
print(f"zoo:digits-cnn: accuracy {baseline.accuracy:.2%}, {count_macs(model, data.input_shape):,} MACs")

# %% [markdown]
# ## 1. Low rank: how much of a layer is really used?
#
# The singular values of a weight matrix say how many directions the layer really uses. A convolution's
# weight (out x in x k x k) is read as a matrix out x (in k k). If the squared singular values fall off
# fast, a few directions carry most of the "energy", and truncating to rank r loses little: by the
# Eckart-Young theorem, the squared Frobenius error of the best rank-r approximation is exactly the sum of
# the discarded squared singular values.

# %%
from analysis.transforms.lowrank import singular_values

fig = go.Figure()
for name in ["features.3", "features.10", "classifier.0"]:
    s = singular_values(model.get_submodule(name))
    energy = (torch.cumsum(s**2, 0) / (s**2).sum()).numpy()
    fig.add_trace(go.Scatter(x=[(i + 1) / len(s) for i in range(len(s))], y=energy, name=name))
fig.update_layout(
    title="Share of squared singular values kept vs fraction of the full rank kept",
    xaxis_title="kept rank fraction",
    yaxis_title="energy kept",
    height=420,
)
fig.show()

# %% [markdown]
# A rank-r factorization of a Linear layer is two Linear layers, in -> r and r -> out; of a k x k
# convolution, a k x k convolution with r outputs followed by a 1x1 convolution. Per output position it
# costs r (in k k + out) instead of out (in k k) multiply-adds, so it only saves anything below
# r = out (in k k) / (in k k + out); a rank above that is refused. Here is `classifier.0` (1024 -> 128)
# at a quarter of its rank:

# %%
from analysis.transforms.lowrank import factorize, plan_factorization

choice = plan_factorization(model, {"classifier.0": 0.25}, data.input_shape)["classifier.0"]
factored = factorize(model, {"classifier.0": 0.25})
print(choice.to_dict())
print("new layers:", factored.classifier[0])
print(f"accuracy {evaluate(factored, data).accuracy:.2%} (was {baseline.accuracy:.2%}); "
      f"MACs {count_macs(factored, data.input_shape):,}")

# %% [markdown]
# The layer has 3.5x fewer parameters (not 4x: at rank r = out / 4 it keeps r x (in + out) weights) and the
# accuracy did not move. The **lowrank sensitivity curve** does this for every layer, alone, at several
# kept rank fractions, and also reports the MACs each point saves:

# %%
from analysis.sensitivity.transform_sweeps import lowrank_sensitivity

lowrank = lowrank_sensitivity(model, data, [0.75, 0.5, 0.25, 0.125])
rows = []
for name, curve in lowrank.layers.items():
    for f, acc, macs in zip(curve.values, curve.accuracy, lowrank.macs_saved[name]):
        rows.append({"layer": name, "kept rank": f, "accuracy drop (points)": 100 * (lowrank.baseline_accuracy - acc),
                     "MACs saved": macs})
frame = pd.DataFrame(rows)
print("\n".join(lowrank.notes))
frame.pivot(index="layer", columns="kept rank", values="accuracy drop (points)").round(2)

# %% [markdown]
# The first convolution (1 input channel, 9 weights per filter) has nothing to spare: its full rank is 9, its
# singular values are nearly flat, and the norm after it amplifies the error of its quietest channels.
# The 64-channel convolutions and the big fully connected layer keep their accuracy at a quarter of their
# rank. The final classifier (10 outputs) is small and sensitive: factoring it saves almost nothing.
#
# ## 2. Weight sharing and Huffman coding
#
# k-means finds 2^b values that fit the layer's weights, wherever they lie, while uniform quantization
# spreads its levels evenly between -max and +max. At the same number of bits, k-means usually has less
# error (higher SQNR, signal-to-quantization-noise ratio, in dB). Whether that buys accuracy is another
# question:

# %%
from analysis.sensitivity.transform_sweeps import quant_vs_kmeans

comparison = quant_vs_kmeans(model, data, bits=4)
comparison.to_frame()[["sqnr_uniform_db", "sqnr_kmeans_db", "accuracy_uniform", "accuracy_kmeans",
                       "bytes_uniform", "bytes_kmeans"]].round(4)

# %% [markdown]
# The **share** sensitivity curve goes down in codebook bits, to a single bit (two values per layer):

# %%
from analysis.sensitivity.transform_sweeps import share_sensitivity

share = share_sensitivity(model, data, [6, 4, 3, 2, 1])
pd.DataFrame(
    {name: [100 * (share.baseline_accuracy - a) for a in curve.accuracy] for name, curve in share.layers.items()},
    index=[f"{int(b)} bits" for b in next(iter(share.layers.values())).values],
).T.round(2)

# %% [markdown]
# ### The Deep Compression pipeline
#
# Han et al. chain three steps: prune the smallest weights (and retrain with the zeros kept), share the
# survivors' values by k-means (and fine-tune the centroids: each centroid moves by the sum of the gradients
# of its weights), then Huffman-code the indices and the gaps between nonzero weights. The table gives the
# size of the whole model after each stage, and its accuracy, as the paper's table does.

# %%
from analysis.compression.deep_compression import deep_compression

prune = {"features.0": 0.5, "features.3": 0.7, "features.7": 0.7, "features.10": 0.8,
         "classifier.0": 0.95, "classifier.2": 0.8}
pipeline = deep_compression(model, data, prune=prune, bits=4, retrain_epochs=RETRAIN_EPOCHS, centroid_epochs=1)
pipeline.to_frame().round(4)

# %% [markdown]
# Pruning alone loses a lot of accuracy and retraining recovers most of it (all of it with the full data and two
# epochs: `benchmarks/transforms.py` measures 30x smaller within a third of a point); sharing at 4 bits costs
# little on top and cuts the size about threefold; Huffman coding takes off another quarter or so, for free, because the
# indices are far from uniformly used. None of this makes the model faster on a dense CPU kernel: it runs
# the same float weights.
#
# ## 3. Binary, ternary and power-of-two weights
#
# * **binary**: each weight becomes +-alpha, alpha = mean |W| of its output channel (XNOR-Net's scaling);
#   1 bit per weight.
# * **ternary** (TWN): weights below 0.7 mean |W| become 0, the rest +-alpha with alpha the mean of their
#   magnitudes; 2 bits per weight.
# * **pow2** (INQ): weights in {0, +-2^k} over a per-layer range of exponents; 5 bits by default. A
#   multiply becomes a shift.
#
# `apply_transforms` applies these (and `rank`, `share_bits`) from per-layer plan fields, and counts each
# transformed weight at its stored size:

# %%
from analysis.transforms.fields import apply_transforms

rows = []
for kind in ["pow2", "ternary", "binary"]:
    for scope, layers in {"classifier.0 only": ["classifier.0"], "every conv and linear": list(lowrank.layers)}.items():
        new, notes, sizes = apply_transforms(model, {name: {"weights": kind} for name in layers})
        rows.append({"weights": kind, "layers": scope, "accuracy": evaluate(new, data).accuracy,
                     "size_bytes": sizes["size_bytes"]})
print(notes[-1])
pd.DataFrame(rows)

# %% [markdown]
# Without training for it, one layer at a time is fine, but the whole network at 1 or 2 bits is not:
# BinaryConnect, XNOR-Net and TWN train *with* the low-bit weights in the forward pass. pow2 at 5 bits keeps
# most of the accuracy even network-wide, which is INQ's point.
#
# ## 4. When each helps
#
# | transform | saves | speeds up a dense CPU kernel? | best on |
# |---|---|---|---|
# | structured pruning (notebook 04) | params, MACs, memory | yes | layers with redundant channels |
# | low rank (SVD) | params, MACs | yes, when r (in k k + out) is well below out (in k k) | large Linear layers and wide convs with fast-falling singular values |
# | uniform b-bit | storage (and time with an int kernel) | only with an integer kernel | everything, 8 bits almost free |
# | k-means sharing + Huffman | storage | no | large layers, with pruning first (Deep Compression) |
# | binary / ternary / pow2 | storage (and, on special hardware, multiplies) | no (simulated here) | networks trained for it |
#
# Read the sensitivity curves together: the layer that tolerates a quarter of its rank (section 1) is the
# one to factor; the layer that keeps its accuracy at 2-bit sharing but not at rank 1/2 is one to share.
