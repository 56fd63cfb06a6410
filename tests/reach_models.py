"""Small models of the input and output patterns a user brings (written for these tests): several
positional inputs, inputs by name with integer ids, a tuple output, a dict output, a 4-D output. Each
module-level `build_*` is a model spec (`tests.reach_models:build_two_inputs`)."""

from __future__ import annotations

import torch
from torch import nn


class TwoInputs(nn.Module):
    """Two positional inputs (N x 12 features and N x 6 features), fused, 4 class scores."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Sequential(nn.Linear(12, 16), nn.ReLU())
        self.right = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.left(a), self.right(b)], dim=1))


class TokenClassifier(nn.Module):
    """Inputs by name: `input_ids` (N x L integers below 50) and `attention_mask` (N x L of 0/1); the
    masked mean of the token embeddings through an MLP, 3 class scores."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.mlp(pooled)


class TupleOutput(nn.Module):
    """A conv trunk with two heads: (class scores N x 5, a feature map N x 8 x 8 x 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.features = nn.Conv2d(16, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.classifier(self.pool(h).flatten(1)), self.features(h)


class DictOutput(nn.Module):
    """An MLP returning a dict: `scores` (N x 6) and `embedding` (N x 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.scores = nn.Linear(32, 6)
        self.embedding = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"scores": self.scores(h), "embedding": self.embedding(h)}


class MapOutput(nn.Module):
    """An image-to-image network (N x 1 x 12 x 12 in, N x 1 x 12 x 12 out): a 4-D output, no classes."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 12, 3, padding=1), nn.ReLU(),
            nn.Conv2d(12, 12, 3, padding=1), nn.ReLU(),
            nn.Conv2d(12, 1, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _seeded(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


def build_two_inputs() -> nn.Module:
    return _seeded(TwoInputs)


def build_token_classifier() -> nn.Module:
    return _seeded(TokenClassifier)


def build_tuple_output() -> nn.Module:
    return _seeded(TupleOutput)


def build_dict_output() -> nn.Module:
    return _seeded(DictOutput)


def build_map_output() -> nn.Module:
    return _seeded(MapOutput)


def random_inputs(name: str, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random unlabelled inputs for model `name`, as arrays named after forward's parameters."""
    g = torch.Generator().manual_seed(seed)
    if name == "two_inputs":
        return {"a": torch.randn(n, 12, generator=g), "b": torch.randn(n, 6, generator=g)}
    if name == "token_classifier":
        ids = torch.randint(0, 50, (n, 7), generator=g)
        mask = (torch.rand(n, 7, generator=g) > 0.2).long()
        mask[:, 0] = 1
        return {"input_ids": ids, "attention_mask": mask}
    if name == "tuple_output":
        return {"x": torch.randn(n, 3, 8, 8, generator=g)}
    if name == "dict_output":
        return {"x": torch.randn(n, 20, generator=g)}
    if name == "map_output":
        return {"x": torch.randn(n, 1, 12, 12, generator=g)}
    raise KeyError(name)


PATTERNS = ("two_inputs", "token_classifier", "tuple_output", "dict_output", "map_output")
