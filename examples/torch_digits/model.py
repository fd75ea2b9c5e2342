"""The torch digits example's network, and the `py:` factory its recipe names.

`load()` rebuilds the module and loads the weights `train.py` saved (a state dict read with
`weights_only=True`: tensors only, nothing in the file runs). The network is channel-first
(NCHW) as PyTorch models are; the recipe asks for channel-last I/O, so the .tflite and the
loaders take [1, 8, 8, 1] images like the Keras digits example.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

WEIGHTS = Path(__file__).resolve().parent / "digits.pt"


class DigitsNet(nn.Module):
    """Two convolutions, a pooling and two dense layers over 8x8 grey images; class probabilities out."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(self.features(image)), dim=-1)


def load() -> DigitsNet:
    model = DigitsNet()
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()
