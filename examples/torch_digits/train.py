"""Train the torch digits example: DigitsNet on scikit-learn's bundled 8x8 digits (no download).

Writes digits.pt (the state dict), calibration.npz (training images), evaluation.npz (held-out
images and labels) and labels.txt next to this file, the images channel-last ([n, 8, 8, 1]) as
the recipe's channel-last I/O takes them. The split is the Keras digits example's. Deterministic
given the seed; takes a few seconds. Run from the repository root:
python examples/torch_digits/train.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from examples.digits.train import load_digits_split, save_data  # noqa: E402  (the same split as the Keras example)
from examples.torch_digits.model import WEIGHTS, DigitsNet  # noqa: E402

SEED = 7
EPOCHS = 15


def train(model: DigitsNet, images: np.ndarray, labels: np.ndarray) -> None:
    """Adam on mini-batches of 32; the model ends with softmax, so the loss takes log-probabilities."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    model.train()
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(x)).split(32):
            optimizer.zero_grad()
            loss = torch.nn.functional.nll_loss(torch.log(model(x[batch]) + 1e-9), y[batch])
            loss.backward()
            optimizer.step()
    model.eval()


def main() -> None:
    torch.manual_seed(SEED)
    x_train, x_test, y_train, y_test = load_digits_split()  # channel-last, [n, 8, 8, 1]
    model = DigitsNet()
    train(model, np.ascontiguousarray(x_train.transpose(0, 3, 1, 2)), y_train)
    with torch.no_grad():
        predicted = model(torch.from_numpy(np.ascontiguousarray(x_test.transpose(0, 3, 1, 2)))).argmax(-1).numpy()
    print(f"held-out accuracy: {(predicted == y_test).mean():.4f}")
    torch.save(model.state_dict(), WEIGHTS)
    save_data(HERE, x_train, x_test, y_test)


if __name__ == "__main__":
    main()
