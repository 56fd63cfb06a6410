"""The zoo's autoencoder and vision transformer: the README's figures (params, MACs, PSNR, accuracy), the
autoencoder scored by PSNR against the original without labels, and the transformer's heads."""

from __future__ import annotations

import math

import pytest
import torch

from analysis.cost import summarize
from analysis.data import load_digits
from analysis.evaluate import evaluate
from analysis.metrics import PSNR_CAP_DB
from analysis.model.specs import load_model
from analysis.zoo.train import NOISE_STD, denoising_psnr


def test_autoencoder_figures_and_metric():
    model = load_model("zoo:digits-autoencoder")
    summary = summarize(model, (1, 16, 16))
    assert (summary.total_params, summary.total_macs) == (9_697, 414_720)  # the README's zoo table
    data = load_digits()
    assert denoising_psnr(model, data) == pytest.approx(20.83, abs=0.01)
    # By hand: the same noise, then 10 log10(1 / MSE) over every pixel (peak 1: images in [0, 1]).
    noise = torch.Generator().manual_seed(1)
    noisy = (data.x + NOISE_STD * torch.randn(data.x.shape, generator=noise)).clamp(0, 1)
    with torch.no_grad():
        mse = float(((model(noisy) - data.x) ** 2).mean())
    assert denoising_psnr(model, data) == pytest.approx(10 * math.log10(1 / mse), rel=1e-6)
    result = evaluate(model, data)  # digits have class labels, but a 4-D output: PSNR against the original
    assert result.metric.name == "psnr" and result.accuracy == PSNR_CAP_DB


def test_vit_figures_and_heads():
    model = load_model("zoo:digits-vit")
    summary = summarize(model, (1, 16, 16))
    assert (summary.total_params, summary.total_macs) == (18_538, 303_424)
    assert evaluate(model, load_digits()).accuracy == pytest.approx(0.9777, abs=1e-4)  # 351 of 359
    attn = model.blocks[0].attn
    assert attn.num_heads == 4 and attn.qkv.out_features == 3 * 32
