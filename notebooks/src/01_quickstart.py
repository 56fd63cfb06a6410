# Source of notebooks/01_quickstart.ipynb: edit here, then run `python tools/make_notebooks.py 01`.

# %% [markdown]
# # 01 · Quickstart: load, count, evaluate, time
#
# Every compression decision rests on four measurements, and this tutorial makes each of them once:
#
# 1. **Load** a model and data from a *spec*: one string, the same one the app and the command line take.
# 2. **Count** what the model costs: parameters, MACs and FLOPs, layer by layer.
# 3. **Evaluate** its accuracy and loss.
# 4. **Time** a forward pass, and read the timing honestly.
#
# Everything below uses the public `analysis` API. The model is `zoo:digits-cnn`, a small VGG-style CNN
# trained on scikit-learn's handwritten digits: it loads in a second and runs on any CPU, so every cell
# finishes quickly. The next notebooks build on this one: `02_sensitivity` (which layers tolerate
# compression), `03_importance` (which channels to remove), `04_prune_quantize_distill` (doing it).

# %%
# Setup. The notebook runs from notebooks/ without installing anything: put the repository root (the folder
# holding `analysis/`) on the import path. Plotly figures are saved inside the notebook file (no network is
# needed to view them). WORKBENCH_FAST=1 (the test suite sets it) only shortens the timing loops.
import os
import sys
from pathlib import Path

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "analysis" / "__init__.py").exists())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch
from torch import nn

pio.renderers.default = "plotly_mimetype+notebook"
FAST = os.environ.get("WORKBENCH_FAST") == "1"
RUNS = 15 if FAST else 40  # timed runs per latency measurement
# One thread: on a laptop or a shared machine, single-threaded timings are the steadiest. Try more.
THREADS = 1

# %% [markdown]
# ## 1. Models and data from specs
#
# One string names a model everywhere. There are four kinds:
#
# | spec | what it does |
# |---|---|
# | `zoo:<name>` | a built-in model, trained on the digits data, weights shipped in the package |
# | `<module>:<callable>` | imports `module` and calls `callable()`; `weights=` then loads a state dict (`.safetensors`, or `.pt` read with `weights_only=True`) |
# | `torchvision:<name>` | a torchvision architecture, where torchvision is installed |
# | `<file>.pt` | a whole pickled module, only with `trust_pickle=True`, because unpickling runs code |
#
# Data comes from a spec too: `digits` (the default), `tensors:<file>` or `imagefolder:<dir>`. Start with
# the defaults:

# %%
from analysis import load_data, load_model

model = load_model("zoo:digits-cnn")
data = load_data("digits")
print(model)
print(
    f"\ndata: {len(data.x)} evaluation samples, {len(data.x_train)} training samples, "
    f"input shape {data.input_shape}, {data.num_classes} classes"
)

# %% [markdown]
# ### Your own code: `module:callable`
#
# Any importable function that returns an `nn.Module` will do. We write a tiny module to a temporary folder,
# put the folder on the import path (the current directory and `PYTHONPATH` are searched too), and load it.
# A file path works as well: `path/to/tiny_net.py:build`.

# %%
import tempfile
import textwrap

workdir = Path(tempfile.mkdtemp(prefix="workbench-quickstart-"))
(workdir / "tiny_net.py").write_text(
    textwrap.dedent(
        """
        from torch import nn


        def build():
            return nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
            )
        """
    )
)
sys.path.insert(0, str(workdir))
tiny = load_model("tiny_net:build")
tiny

# %% [markdown]
# `build()` initialises random weights, so two loads give two different models. To get the same model back,
# save its state dict (`.safetensors` here) and pass it as `weights=`:

# %%
from safetensors.torch import save_file

weights_file = workdir / "tiny.safetensors"
save_file(tiny.state_dict(), str(weights_file))

fresh = load_model("tiny_net:build")
reloaded = load_model("tiny_net:build", weights=weights_file)
x = data.x[:8]
with torch.inference_mode():
    print("a fresh build gives the same outputs:     ", torch.allclose(fresh(x), tiny(x)))
    print("build + weights gives the same outputs:   ", torch.allclose(reloaded(x), tiny(x)))

# %% [markdown]
# Weights that do not fit the architecture fail with one line that says what does not fit. Every error
# caused by bad input is a `WorkbenchError` (a `ValueError`) with a message that says what to do; the app
# shows the same line in the page and the command line prints it without a traceback.

# %%
from analysis import WorkbenchError

cnn_weights = workdir / "digits-cnn.safetensors"
save_file(model.state_dict(), str(cnn_weights))
try:
    load_model("tiny_net:build", weights=cnn_weights)
except WorkbenchError as err:
    print("WorkbenchError:", err)

# %% [markdown]
# ### torchvision
#
# torchvision is optional. Where it is installed, `torchvision:resnet18` builds the architecture (without
# downloading weights; pass a state dict with `weights=`). Where it is not, the error names the package:

# %%
try:
    resnet18 = load_model("torchvision:resnet18")
    print(f"torchvision:resnet18 loaded: {sum(p.numel() for p in resnet18.parameters()):,} parameters")
except WorkbenchError as err:
    print("WorkbenchError:", err)

# %% [markdown]
# ### A whole pickled model
#
# `torch.save(model, "model.pt")` pickles the whole object, code references included, and unpickling a file
# can run any code its author wrote into it. So the workbench refuses a pickled model unless you say you
# trust the file (`--trust-pickle` on the command line, a checkbox in the app):

# %%
pickled = workdir / "digits-cnn-whole.pt"
torch.save(model, pickled)
try:
    load_model(str(pickled))
except WorkbenchError as err:
    print("WorkbenchError:", err)

trusted = load_model(str(pickled), trust_pickle=True)
with torch.inference_mode():
    print(f"\n{type(trusted).__name__} unpickled; same outputs as the zoo model:", torch.equal(trusted(x), model(x)))

# %% [markdown]
# ### Your own data: `tensors:<file>`
#
# A `.npz`, `.pt` or `.safetensors` file with `x` (N × ...) floats and `y` (N) integer labels is the
# evaluation split. Optional `x_train` and `y_train` are the split used for fine-tuning, calibration and the
# data-driven importance criteria; without them those use `x`/`y`. Here we write the first 200 digits of the
# evaluation split, and the whole training split, to an `.npz`:

# %%
npz_file = workdir / "my_digits.npz"
np.savez(
    npz_file,
    x=data.x[:200].numpy(),
    y=data.y[:200].numpy(),
    x_train=data.x_train.numpy(),
    y_train=data.y_train.numpy(),
)
mine = load_data(f"tensors:{npz_file}")
print(
    f"{mine.spec}\n{len(mine.x)} evaluation samples, {len(mine.x_train)} training samples, "
    f"input shape {mine.input_shape}, {mine.num_classes} classes"
)

# %% [markdown]
# ## 2. What does the model cost? Parameters, MACs and FLOPs
#
# A **MAC** is one multiply-accumulate, `acc += w * x`: the unit of work of convolutions, linear layers and
# matrix products. Per sample,
#
# * a `Conv2d` with `C_in` input channels and `C_out` filters of `k × k`, producing an `H_out × W_out` map,
#   does `C_out · H_out · W_out · (C_in / groups) · k²` MACs;
# * a `Linear` layer with `n_in` inputs and `n_out` outputs does `n_in · n_out` MACs.
#
# A **FLOP** counts the multiply and the add as two operations, so **FLOPs = 2 × MACs**. The field uses both
# words, and many pruning papers write "FLOPs" for what is really MACs, which is how two tools can disagree
# about the same model by exactly a factor of two. The workbench shows both, labelled. It counts
# convolutions, linear layers and matrix products (functional calls such as `torch.matmul` and attention
# included), and cross-checks its count against a second counter, `thop`. Normalisation, activations and
# pooling do no MACs: their arithmetic is small, which does not make them free in time, as section 4 shows.

# %%
from analysis import summarize

summary = summarize(model, data.input_shape)
print(
    f"per sample: {summary.total_params:,} parameters, {summary.total_macs:,} MACs, "
    f"{summary.total_flops:,} FLOPs (= 2 x MACs)"
)
print(
    f"second counter (thop): {summary.macs_thop:,} MACs; "
    + ("the counters agree" if not summary.differences else "differences: " + "; ".join(summary.differences))
)
frame = summary.to_frame()
frame

# %% [markdown]
# Check the counter against the formulas above, layer by layer, straight from each module's attributes and
# its output shape:

# %%
modules = dict(model.named_modules())
for row in frame.itertuples():
    module = modules[row.name]
    out_shape = [int(v) for v in row.output_shape.split("x")]
    if isinstance(module, nn.Conv2d):
        _, c_out, h_out, w_out = out_shape
        k_h, k_w = module.kernel_size
        by_hand = c_out * h_out * w_out * (module.in_channels // module.groups) * k_h * k_w
    elif isinstance(module, nn.Linear):
        by_hand = module.in_features * module.out_features
    else:
        continue
    print(f"{row.name:13s} {row.type:7s} summary {row.macs:>10,}   by hand {by_hand:>10,}   {'ok' if row.macs == by_hand else 'DIFFERENT'}")

# %% [markdown]
# Where do the parameters sit, and where does the arithmetic happen? Both as shares of the model's total:

# %%
costly = frame[(frame.params > 0) & (frame.type != "BatchNorm2d")]
fig = go.Figure(
    [
        go.Bar(name="share of parameters", x=costly.name, y=costly.params / summary.total_params),
        go.Bar(name="share of MACs", x=costly.name, y=costly.macs_share),
    ]
)
fig.update_layout(
    barmode="group", yaxis_tickformat=".0%", height=360, title="Parameters and MACs are spent in different layers"
)
fig.show()
by_params = costly.loc[costly.params.idxmax()]
by_macs = costly.loc[costly.macs.idxmax()]
print(f"most parameters: {by_params['name']} ({by_params.params / summary.total_params:.0%} of them, {by_params.macs_share:.1%} of MACs)")
print(f"most MACs:       {by_macs['name']} ({by_macs.macs_share:.0%} of them, {by_macs.params / summary.total_params:.1%} of parameters)")

# %% [markdown]
# The two lines under the chart say it in numbers. In a CNN the convolutions at full resolution do most of the
# work with few weights (each weight is reused at every position), while a fully connected layer holds many
# weights and uses each once. So pruning for **size** and pruning for **speed** point at different layers,
# and a plan should say which of the two it is after.

# %% [markdown]
# ## 3. Accuracy and loss
#
# Accuracy is top-1 on the evaluation split; loss is the mean cross-entropy over it (in nats). On a model
# this accurate, accuracy moves in steps of one sample (1 / the number of samples) and barely moves at all
# under mild damage, while the loss moves continuously: that is why the sensitivity sweeps in notebook 02
# record both.

# %%
from analysis import evaluate

result = evaluate(model, data)
print(f"accuracy {result.accuracy:.2%}   loss {result.loss:.4f}   on {result.samples} samples")
print(f"one sample is {1 / result.samples:.2%} of accuracy")

# %% [markdown]
# The `.npz` we wrote holds the first 200 evaluation samples, so evaluating on it must give exactly what
# evaluating on the first 200 digits gives:

# %%
on_file = evaluate(model, mine)
on_digits = evaluate(model, data, limit=200)
print(f"tensors file: accuracy {on_file.accuracy:.4f} loss {on_file.loss:.6f} ({on_file.samples} samples)")
print(f"digits[:200]: accuracy {on_digits.accuracy:.4f} loss {on_digits.loss:.6f} ({on_digits.samples} samples)")

# %% [markdown]
# ## 4. Latency, and why medians
#
# MACs are a property of the model. **Latency is a property of the model on a machine**: how efficient each
# kernel is, how much memory it moves, the thread count, the batch size, and whatever else the machine is
# doing at the time. The workbench measures the wall time of one forward pass over a batch under
# `torch.inference_mode()`, after a few warm-up passes (the first calls allocate memory and pick kernels),
# repeated many times.
#
# Timing samples are skewed: a run cannot be much faster than the true cost, but an interrupt, a context
# switch or another program can make any run much slower. A handful of slow runs drag the **mean** up; the
# **median** ignores them. So the workbench reports the median, with the 10th and 90th percentiles for the
# spread, and states the batch size, thread count, torch version and CPU next to every number.

# %%
from analysis import measure_latency

latency = measure_latency(model, data.input_shape, batch_size=32, threads=THREADS, runs=RUNS)
times = np.asarray(latency.times_ms)
print(
    f"batch {latency.batch_size}, {latency.threads} thread(s), torch {latency.torch_version}, CPU {latency.cpu}\n"
    f"median {latency.median_ms:.2f} ms   p10 {latency.p10_ms:.2f} ms   p90 {latency.p90_ms:.2f} ms   "
    f"({latency.runs} runs)\nmean {times.mean():.2f} ms   slowest {times.max():.2f} ms   "
    f"fastest {times.min():.2f} ms"
)

# %%
fig = go.Figure(go.Histogram(x=times, nbinsx=30, name="runs"))
for value, label, dash in [(latency.median_ms, "median", "solid"), (times.mean(), "mean", "dash")]:
    fig.add_vline(x=value, line_dash=dash, annotation_text=label, annotation_position="top")
fig.update_layout(
    title=f"{latency.runs} timed forward passes (batch {latency.batch_size})",
    xaxis_title="ms per batch",
    yaxis_title="runs",
    height=320,
    showlegend=False,
)
fig.show()

# %% [markdown]
# How far the mean sits from the median in the printout depends on how busy the machine was; the median
# moves much less from one measurement to the next. That stability is what a before/after comparison needs.
#
# ### Batch size
#
# A forward pass has a fixed cost per call (Python, dispatch, memory allocation) on top of the per-sample
# work; larger batches spread that cost thinner, but their activations may no longer fit in the CPU's caches.
# Which effect wins depends on the model and the machine, so time per *sample* depends on the batch size,
# and two latencies are only comparable at the same batch size. The workbench's default everywhere is 32.

# %%
batch_sizes = [1, 8, 32, 128]
per_batch = [
    measure_latency(model, data.input_shape, batch_size=b, threads=THREADS, runs=max(5, RUNS // 3)).median_ms
    for b in batch_sizes
]
for b, ms in zip(batch_sizes, per_batch, strict=True):
    print(f"batch {b:4d}: {ms:8.3f} ms per batch   {1000 * ms / b:8.1f} µs per sample")
fig = go.Figure(go.Scatter(x=batch_sizes, y=[1000 * ms / b for b, ms in zip(batch_sizes, per_batch, strict=True)], mode="lines+markers"))
fig.update_layout(
    title="Time per sample at each batch size",
    xaxis=dict(title="batch size", type="log", tickvals=batch_sizes),
    yaxis_title="µs per sample (median)",
    height=320,
)
fig.show()

# %% [markdown]
# ### Where the time goes: MACs are not milliseconds
#
# `layer_times` puts a timer around each layer's forward pass. Hooks add a few microseconds per call, so
# read the result as each layer's *share* of the time, and set it next to its share of MACs:

# %%
from analysis import layer_times

per_layer_ms = layer_times(model, data.input_shape, batch_size=32, threads=THREADS, runs=max(5, RUNS // 2))
shares = frame.set_index("name").assign(time_ms=lambda f: f.index.map(per_layer_ms).astype(float))
shares["time_share"] = shares.time_ms / shares.time_ms.sum()
fig = go.Figure(
    [
        go.Bar(name="share of MACs", x=shares.index, y=shares.macs_share),
        go.Bar(name="share of measured time", x=shares.index, y=shares.time_share),
    ]
)
fig.update_layout(barmode="group", yaxis_tickformat=".0%", height=360, title="Share of MACs vs share of time, per layer")
fig.show()
no_macs = shares[shares.macs == 0]
print(
    f"layers that do no MACs (norms, activations, pooling) take {no_macs.time_share.sum():.0%} of the measured time; "
    f"the slowest of them is {no_macs.time_share.idxmax()} ({no_macs.time_share.max():.0%})"
)

# %% [markdown]
# ### Comparing two models
#
# To compare models, time them in **alternating rounds** (`compare_latency`): if the machine gets busier
# halfway through, both models are slowed alike, instead of whichever happened to be timed second. Here the
# CNN is compared with `zoo:digits-mobilenet`, which replaces most convolutions by depthwise-separable ones
# and needs far fewer MACs. Whether it is *that* much faster is exactly what MACs cannot tell you:
# depthwise convolutions do little arithmetic per byte of memory they read, so CPUs run them far below their
# peak.

# %%
from analysis import compare_latency

mobilenet = load_model("zoo:digits-mobilenet")
mobile_macs = summarize(mobilenet, data.input_shape).total_macs
timed = compare_latency(
    {"digits-cnn": model, "digits-mobilenet": mobilenet},
    data.input_shape,
    batch_size=32,
    threads=THREADS,
    rounds=5 if FAST else 10,
)
for name, res in timed.items():
    print(f"{name:17s} median {res.median_ms:7.2f} ms   p10 {res.p10_ms:7.2f}   p90 {res.p90_ms:7.2f}   ({res.runs} runs)")
print(f"\nMACs:    digits-cnn / digits-mobilenet = {summary.total_macs / mobile_macs:.1f}x")
print(f"latency: digits-cnn / digits-mobilenet = {timed['digits-cnn'].median_ms / timed['digits-mobilenet'].median_ms:.1f}x")
print(f"accuracy: {evaluate(model, data).accuracy:.2%} vs {evaluate(mobilenet, data).accuracy:.2%}")

# %% [markdown]
# The two ratios printed above are the point of this section: a MAC count predicts one speed-up and the
# clock measures another. Every result in the workbench therefore reports measured latency next to the MACs,
# and notebook 04 judges compressed models by accuracy against **measured** latency.
#
# ## Next
#
# * `02_sensitivity.ipynb`: how much each layer tolerates pruning and quantization, and how to choose
#   per-layer ratios from the curves.
# * `03_importance.ipynb`: which channels to remove: seven importance criteria against the oracle.
# * `04_prune_quantize_distill.ipynb`: apply a plan, fine-tune with distillation, and read the
#   accuracy-vs-latency trade-off.
