"""Reproduce the zoo's weights deterministically: `python -m analysis.zoo.train [--only NAME]`.

Same seed, same data order, single thread: the same weights on any CPU with this torch version (float
reductions may differ in the last bits across CPUs; accuracies stay within a sample).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from analysis.data import load_digits
from analysis.evaluate import evaluate
from analysis.io import write_atomic
from analysis.zoo import WEIGHTS_DIR, ZOO, weights_path

EPOCHS = 30
BATCH_SIZE = 64
SEED = 0
NOISE_STD = 0.3  # the denoising autoencoder's input noise: Gaussian, then clipped to [0, 1]


def noisy(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`x` with seeded Gaussian noise of std `NOISE_STD`, clipped to the images' [0, 1] range."""
    return (x + NOISE_STD * torch.randn(x.shape, generator=generator)).clamp(0.0, 1.0)


def denoising_psnr(model: torch.nn.Module, data) -> float:
    """PSNR (dB, peak 1: the images' range) of the model's output on noisy evaluation images against the
    clean ones, over every pixel of the split (fixed noise, seed 1)."""
    noise = torch.Generator().manual_seed(SEED + 1)
    with torch.inference_mode():
        out = model(noisy(data.x, noise))
    mse = float(((out - data.x) ** 2).mean())
    return 10.0 * math.log10(1.0 / mse)


def train_one(name: str, epochs: int = EPOCHS, out_dir: Path = WEIGHTS_DIR) -> dict[str, float]:
    """Train zoo model `name` from a fixed seed, save its weights in `out_dir`, return test accuracy and loss
    (the denoising autoencoder: its PSNR on noisy evaluation images against the clean ones)."""
    torch.manual_seed(SEED)
    data = load_digits()
    model = ZOO[name]()
    denoise = getattr(model, "task", "") == "denoise"
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=epochs * ((len(data.x_train) + BATCH_SIZE - 1) // BATCH_SIZE)
    )
    gen = torch.Generator().manual_seed(SEED)
    for _ in tqdm(range(epochs), desc=name, leave=False):
        model.train()
        order = torch.randperm(len(data.x_train), generator=gen)
        for start in range(0, len(order), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            x, y = data.x_train[idx], data.y_train[idx]
            # Small random shifts: the digits are few, and shifted copies are free regularisation.
            dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            # The autoencoder learns the clean image from a noisy copy: no labels involved.
            loss = F.mse_loss(model(noisy(x, gen)), x) if denoise else F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = out_dir / weights_path(name).name
    write_atomic(path, lambda tmp: save_file(state, str(tmp)))
    if denoise:
        return {"denoising_psnr_db": denoising_psnr(model, data)}
    result = evaluate(model, data)
    return {"accuracy": result.accuracy, "loss": result.loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted(ZOO), help="train just this model")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder for the .safetensors files")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [args.only] if args.only else list(ZOO)
    print(json.dumps({n: train_one(n, args.epochs, args.out) for n in names}, indent=2))


if __name__ == "__main__":
    main()
