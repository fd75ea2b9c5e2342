"""Small PyTorch models for tests/test_torch_models.py, built by `py:` factories as a recipe names
them (`py:torch_nets:cnn`): a CNN, a two-input two-output model returning a dict, an LSTM and an
attention block. Seeded, untrained: the fp32 checks compare numbers, not accuracy (the trained
example under examples/torch_digits covers agreement)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """NCHW image -> class probabilities (convolutions, batch norm, pooling, dense)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.body(x), dim=-1)


class TwoInTwoOut(nn.Module):
    """Features and a context vector in; a dict of scores and an embedding out."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(4, 16)
        self.scores, self.embed = nn.Linear(16, 3), nn.Linear(16, 8)

    def forward(self, features: torch.Tensor, context: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = torch.tanh(self.a(features) + self.b(context))
        return {"scores": torch.softmax(self.scores(hidden), -1), "embedding": self.embed(hidden)}


class Recurrent(nn.Module):
    """A batch-first LSTM over a sequence; the last step's state classified."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 12, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(sequence)
        return self.head(out[:, -1])


class Attention(nn.Module):
    """A transformer encoder block: multi-head self-attention, layer norms, an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(16), nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        hidden = self.norm1(tokens + attended)
        out = self.norm2(hidden + self.mlp(hidden))
        return out, out.mean(dim=1)


def _seeded(cls):
    torch.manual_seed(0)
    model = cls()
    for module in model.modules():  # non-trivial batch norm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def cnn() -> nn.Module:
    return _seeded(SmallCNN)


def two_io() -> nn.Module:
    return _seeded(TwoInTwoOut)


def lstm() -> nn.Module:
    return _seeded(Recurrent)


def attention() -> nn.Module:
    return _seeded(Attention)


def not_a_module():
    return "a string"
