# Source of notebooks/04_prune_quantize_distill.ipynb: edit here, then run `python tools/make_notebooks.py 04`.

# %% [markdown]
# # 04 · Prune, quantize, distill: from a plan to a faster model
#
# The earlier notebooks measured; this one changes the model. A **compression plan** says, per layer, how
# much to prune, how (structured or not, by which importance criterion) and at how many bits to store the
# weights, and whether to fine-tune afterwards. `compress` applies it to a copy of the model and measures
# before and after the same way: accuracy, loss, parameters, MACs, size in bytes and **measured** latency,
# the two models timed in alternating rounds at the same batch size and thread count.
#
# The route through this notebook:
#
# 1. a plan written by hand, applied without and with fine-tuning, and with **distillation** from the
#    original model;
# 2. a plan **suggested** for a MACs budget from the sensitivity curves, against a uniform plan with the same
#    MACs;
# 3. **unstructured** pruning, and why it does not make the model faster;
# 4. **8- and 4-bit** weights, and which latencies are real and which simulated;
# 5. all of it on one **accuracy-vs-latency** plot, and the Pareto front.

# %%
# Setup: the repository root on the import path, figures saved inside the notebook, WORKBENCH_FAST=1 (set
# by the test suite) for fewer samples, one fine-tuning epoch instead of two and shorter timing loops.
import os
import sys
import warnings
from pathlib import Path

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "analysis" / "__init__.py").exists())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

pio.renderers.default = "plotly_mimetype+notebook"
warnings.filterwarnings("ignore", message="IProgress not found")  # captum imports tqdm.auto; no widgets here
warnings.filterwarnings("ignore", message="TypedStorage is deprecated")  # torch's own pickling of int8 Linear
FAST = os.environ.get("WORKBENCH_FAST") == "1"
EPOCHS = 1 if FAST else 2  # fine-tuning epochs over the training split
ROUNDS = 4 if FAST else 10  # alternating latency rounds
THREADS = 1  # single-threaded timings are the steadiest on a laptop or a shared machine
BATCH = 32  # the workbench's default batch size for latency

# %%
from analysis import evaluate, load_data, load_model

model = load_model("zoo:digits-cnn")
data = load_data("digits")
if FAST:
    data = data.subset(300)  # the test suite evaluates on 300 digits and fine-tunes on 300
baseline = evaluate(model, data)
print(f"zoo:digits-cnn: accuracy {baseline.accuracy:.2%}, loss {baseline.loss:.4f}")

# %% [markdown]
# ## 1. A plan by hand
#
# A plan is plain data with three parts: `default` settings for every prunable layer, per-layer overrides in
# `layers` (key by key), and `finetune`. The final classifier keeps its outputs unless the plan names it. The
# same JSON is what `python -m analysis compress --plan plan.json` reads.
#
# From notebook 02: the two 64-channel convolutions and the first fully connected layer tolerated
# structured pruning well, and the convolutions at full resolution do most of the MACs. So: half the
# channels of `features.3`, `features.7`, `features.10` and `classifier.0`, ranked by their L1 norm (what
# the sensitivity sweep ranks by, so its curves apply), no fine-tuning yet.

# %%
from analysis import CompressionPlan, compress

HAND = ["features.3", "features.7", "features.10", "classifier.0"]
by_hand = CompressionPlan.from_dict(
    {
        "default": {"prune": 0.0, "criterion": "l1", "structured": True, "bits": 32},
        "layers": {name: {"prune": 0.5} for name in HAND},
        "finetune": {"epochs": 0},
    }
)
print(by_hand.to_json())

# %%
def table(results):
    """Before and after of one or more compression results, side by side."""
    first = next(iter(results.values()))
    rows = {"original": first.before.to_dict()} | {name: r.after.to_dict() for name, r in results.items()}
    frame = pd.DataFrame(rows).T[["accuracy", "loss", "params", "macs", "size_bytes", "latency_ms", "latency_label"]]
    frame["speedup"] = [1.0] + [r.speedup for r in results.values()]
    frame["MAC reduction"] = [1.0] + [r.mac_reduction for r in results.values()]
    return frame


results = {}
results["by hand"] = compress(model, by_hand, data, batch_size=BATCH, threads=THREADS, latency_rounds=ROUNDS)
table({"by hand": results["by hand"]})

# %% [markdown]
# Structured pruning removed channels for real: parameters, MACs and size fell, and so did the measured
# latency. `speedup` is the measured latency ratio and `MAC reduction` the counted one; they rarely match
# (notebook 01: not every millisecond is a MAC).
#
# What did it cost? The sensitivity sweep measured each of these groups pruned *alone*. Add up their
# single-group drops at ratio 0.5 and compare with the drop of all four together:

# %%
from analysis import sensitivity_sweep

sweep = sensitivity_sweep(model, data, kind="structured", ratios=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
at_half = {name: sweep.drops(name)[list(sweep.layers[name].values).index(0.5)] for name in HAND}
print("single-group drops at 0.5 (points):", {k: round(100 * v, 2) for k, v in at_half.items()})
print(f"sum of the single-group drops: {100 * sum(at_half.values()):.2f} points")
print(f"all four pruned together:      {-100 * results['by hand'].accuracy_delta:.2f} points")

# %% [markdown]
# The two numbers above are the compounding that notebook 02 warned about: layers pruned together interact,
# and the remaining weights were trained to work with the removed ones.
#
# The criterion is one key of the plan. Notebook 03 found which criterion best matches the oracle on this
# model; here is the same plan ranking channels by `taylor` instead of `l1`:

# %%
by_hand_taylor = CompressionPlan.from_dict(
    {**by_hand.to_dict(), "default": {**by_hand.default.to_dict(), "criterion": "taylor"}}
)
results["by hand, taylor"] = compress(model, by_hand_taylor, data, batch_size=BATCH, threads=THREADS, latency_rounds=ROUNDS)
table({k: results[k] for k in ["by hand", "by hand, taylor"]})

# %% [markdown]
# ## 2. Fine-tuning, and distillation
#
# A short **fine-tune** on the training split lets the remaining weights adapt to the missing ones.
#
# %%
results["by hand + fine-tune"] = compress(
    model, by_hand.with_finetune(epochs=EPOCHS, distill=False), data, batch_size=BATCH, threads=THREADS, latency_rounds=ROUNDS
)
results["by hand + distill"] = compress(
    model, by_hand.with_finetune(epochs=EPOCHS, distill=True), data, batch_size=BATCH, threads=THREADS, latency_rounds=ROUNDS
)
table({k: results[k] for k in ["by hand", "by hand + fine-tune", "by hand + distill"]})

# %% [markdown]
# Compare the accuracy and loss columns. On a data set this small and easy, both kinds of fine-tuning usually
# recover most of what pruning cost, and the difference between them is a few samples either way; distillation
# matters more when labels are scarce or the student much smaller than its teacher. The per-epoch training loss
# and accuracy are in each result's `finetune` record:

# %%
for name in ["by hand + fine-tune", "by hand + distill"]:
    record = results[name].finetune
    print(f"{name:20s} epochs {record['epochs']}  training loss per epoch {[round(v, 4) for v in record['losses']]}  "
          f"training accuracy {[round(v, 4) for v in record['train_accuracy']]}")

# %% [markdown]
# ## 3. A plan suggested for a budget
#
# Choosing ratios by hand does not scale. `suggest` turns notebook 02's structured sensitivity curves into
# per-group ratios that meet a **budget**: `macs=0.5` keeps at most half the MACs (`latency=0.6` and
# `drop=0.01` are the other kinds). It is greedy: starting from nothing pruned, each step moves one group to
# its next ratio, the one that loses the least accuracy per MAC saved. It predicts the accuracy drop as the
# sum of the single-group drops, which is an estimate (groups interact), and checks the MACs on a really
# pruned copy.

# %%
from analysis import suggest

suggestion = suggest(sweep, "macs=0.5", model=model, data=data, criterion="l1")
print(f"budget {suggestion.budget}: met {suggestion.met}, MACs kept {suggestion.mac_fraction:.1%}, "
      f"predicted drop {100 * suggestion.predicted_drop:.2f} points (before fine-tuning)")
print("ratios per group:", {k: round(v, 2) for k, v in suggestion.ratios.items()})
for note in suggestion.notes:
    print("note:", note)

# %% [markdown]
# Does spending the budget where the curves say pay off? Compare with a **uniform** plan, the same ratio in
# every group, the smallest that keeps at most the same fraction of MACs, both fine-tuned the same way (with
# distillation):

# %%
from analysis import uniform_plan

uniform, uniform_ratio = uniform_plan(model, data.input_shape, suggestion.mac_fraction, criterion="l1")
finetune = {"epochs": EPOCHS, "distill": True}
results["suggested (macs=0.5)"] = compress(
    model, suggestion.plan.with_finetune(**finetune), data, batch_size=BATCH, threads=THREADS, latency_rounds=ROUNDS
)
results[f"uniform {uniform_ratio:.3f}"] = compress(
    model, uniform.with_finetune(**finetune), data, batch_size=BATCH, threads=THREADS, latency_rounds=ROUNDS
)
table({k: results[k] for k in ["suggested (macs=0.5)", f"uniform {uniform_ratio:.3f}"]})

# %% [markdown]
# Read the two rows together: about the same MACs (the MAC reduction column), but different layers thinned. The
# accuracy and the measured speed-up can both differ, because a MAC in one layer does not cost the same time
# as a MAC in another. PaddleSlim reported such a case on ImageNet: at equal FLOPs, sensitivity-chosen
# ratios were more accurate than uniform ones but ran slower. That is why the comparison that matters is
# accuracy against measured latency (section 6), not against MACs.
#
# ## 4. Unstructured pruning does not speed up dense kernels
#
# Unstructured pruning zeroes the individual weights of smallest magnitude. The tensors keep their shapes,
# and a dense convolution or matrix multiply (the kernels PyTorch runs on a CPU) does a multiply-add for
# every weight, zero or not: the same MACs, the same memory traffic, the same time. Sparse kernels that skip
# zeros exist, but they only pay off at very high sparsity and with structure the hardware can use. What
# unstructured sparsity *does* buy is storage: saved in a sparse format (a bitmask plus the nonzero values),
# the model shrinks.

# %%
for ratio in [0.5, 0.8]:
    results[f"unstructured {ratio:.0%}"] = compress(
        model,
        CompressionPlan.uniform(ratio, structured=False, criterion="l1"),
        data,
        batch_size=BATCH,
        threads=THREADS,
        latency_rounds=ROUNDS,
    )
frame = table({k: results[k] for k in ["unstructured 50%", "unstructured 80%"]})
frame["nonzero params"] = [results["unstructured 50%"].before.nonzero_params] + [
    results[k].after.nonzero_params for k in ["unstructured 50%", "unstructured 80%"]
]
frame["sparse size_bytes"] = [None] + [results[k].sparse_size_bytes for k in ["unstructured 50%", "unstructured 80%"]]
frame

# %% [markdown]
# Parameters, MACs and dense size are unchanged, and the speed-up sits at 1 within timing noise; the nonzero
# count and the sparse size are what moved. (Uniform unstructured pruning also hits the small first layer
# as hard as the rest, which is where the accuracy goes: notebook 02's curves said so.) `compress` states
# this in its notes:

# %%
print(results["unstructured 80%"].notes[0])

# %% [markdown]
# ## 5. 8-bit and 4-bit weights
#
# Quantizing weights to *b* bits (symmetric, per output channel) cuts their storage to *b*/32 of float32,
# plus one float scale per channel. Speed is another matter: it needs a kernel that computes in integers.
# On x86 CPUs PyTorch has one for 8-bit `Linear` layers (dynamic quantization: int8 weights, activations
# quantized per batch at run time), and `compress` uses it where it exists; there is no such kernel here
# for convolutions or for 4 bits, so those weights are rounded to the b-bit grid but stored and run as
# float32, and their latency is labelled **simulated**. A latency labelled `simulated` tells you nothing
# about a real b-bit kernel; a `real` one was measured on the integer kernel.

# %%
for bits in [8, 4]:
    results[f"{bits}-bit weights"] = compress(
        model, CompressionPlan.uniform(0.0, bits=bits), data, batch_size=BATCH, threads=THREADS, latency_rounds=ROUNDS
    )
table({k: results[k] for k in ["8-bit weights", "4-bit weights"]})

# %%
for name in ["8-bit weights", "4-bit weights"]:
    r = results[name]
    print(f"{name}: bits per layer {r.quantized}; real int8 layers: {r.int8_layers or 'none'}")
    for note in r.notes:
        print("   note:", note)

# %% [markdown]
# Pruning and quantization combine: the suggested plan with every layer at 8 bits.

# %%
suggested = suggestion.plan.with_finetune(**finetune).to_dict()
combined = CompressionPlan.from_dict({**suggested, "default": {**suggested["default"], "bits": 8}})
results["suggested + 8-bit"] = compress(model, combined, data, batch_size=BATCH, threads=THREADS, latency_rounds=ROUNDS)
table({"suggested + 8-bit": results["suggested + 8-bit"]})

# %% [markdown]
# ## 6. Accuracy against latency: the Pareto front
#
# Every result above was timed against the original in its own alternating rounds. To put them all on one
# axis, the compressed models (each result keeps its `model`) are timed once more, all together, in
# alternating rounds, so a busy moment slows every model alike. A model is on the **Pareto front** when no
# other model is both at least as fast and at least as accurate (and better in one of the two). Only models
# on the front are worth choosing; which one depends on the accuracy you can give up.

# %%
from analysis import compare_latency

models = {"original": model} | {name: r.model for name, r in results.items()}
timed = compare_latency(models, data.input_shape, batch_size=BATCH, threads=THREADS, rounds=ROUNDS)
points = pd.DataFrame(
    {
        "accuracy": [baseline.accuracy] + [r.after.accuracy for r in results.values()],
        "latency_ms": [timed[name].median_ms for name in models],
        "size_kib": [results["by hand"].before.size_bytes / 1024] + [r.after.size_bytes / 1024 for r in results.values()],
        "label": ["real"] + [r.after.latency_label for r in results.values()],
    },
    index=list(models),
)
points["pareto"] = [
    not any(
        (o.latency_ms <= p.latency_ms and o.accuracy >= p.accuracy)
        and (o.latency_ms < p.latency_ms or o.accuracy > p.accuracy)
        for _, o in points.iterrows()
    )
    for _, p in points.iterrows()
]
points.sort_values("latency_ms")

# %%
import plotly.express as px

front = points[points.pareto].sort_values("latency_ms")
fig = go.Figure()
fig.add_trace(
    go.Scatter(x=front.latency_ms, y=front.accuracy, mode="lines", line=dict(dash="dot", color="gray"), name="Pareto front")
)
colors = px.colors.qualitative.Dark24
for i, (name, p) in enumerate(points.iterrows()):
    fig.add_trace(
        go.Scatter(
            x=[p.latency_ms],
            y=[p.accuracy],
            mode="markers",
            name=f"{name} ({p.label})" if p.label == "simulated" else name,
            marker=dict(
                size=10 + 20 * p.size_kib / points.size_kib.max(),
                color=colors[i % len(colors)],
                symbol="diamond-open" if p.label == "simulated" else "circle",
                line=dict(width=2 if p.pareto else 0, color="black"),
            ),
            hovertemplate=f"{name}<br>%{{x:.2f}} ms<br>accuracy %{{y:.2%}}<br>{p.size_kib:.0f} KiB<extra></extra>",
        )
    )
fig.update_layout(
    title=f"Accuracy vs measured latency (batch {BATCH}, {THREADS} thread; marker size = model size, outlined = on the front)",
    xaxis_title="median latency per batch (ms)",
    yaxis_title="accuracy",
    yaxis_tickformat=".0%",
    height=520,
)
fig.show()
print("on the Pareto front, fastest first:", ", ".join(front.index))
same_shape = points.loc[["by hand", "by hand, taylor", "by hand + fine-tune", "by hand + distill"], "latency_ms"]
print(
    f"the four 'by hand' models share one architecture; their medians span {same_shape.min():.2f} to "
    f"{same_shape.max():.2f} ms ({same_shape.max() / same_shape.min() - 1:.0%}): the timing noise of this run"
)

# %% [markdown]
# How to read it: up and to the left is better. Models with the same architecture should time alike, so the
# spread printed for the four "by hand" models is the timing noise of this run: a latency difference smaller
# than that is not a difference, and a point's place on the front can hinge on it.
#
# The structured plans buy real speed; the unstructured ones stay at the original's latency, whatever their
# sparsity; the quantized ones marked *simulated* sit where their float kernels put them, which says nothing
# about an integer kernel, so judge them by size (the marker) rather than by position on the latency axis.
#
# ## 7. Saving the compressed model
#
# A compressed model is an ordinary `nn.Module` with smaller layers, so it is saved whole (a pickle) and
# loaded back with `trust_pickle=True`; the command line's `compress --save model.pt` does the same, and
# `evaluate --model model.pt --trust-pickle` reproduces the accuracy.

# %%
import tempfile

from analysis import save_model

saved = save_model(results["suggested + 8-bit"].model, Path(tempfile.mkdtemp()) / "digits-cnn-compressed.pt")
reloaded = load_model(str(saved), trust_pickle=True)
again = evaluate(reloaded, data)
print(f"{saved.name}: {saved.stat().st_size / 1024:.0f} KiB on disk; accuracy after reload {again.accuracy:.2%} "
      f"(compress reported {results['suggested + 8-bit'].after.accuracy:.2%})")
