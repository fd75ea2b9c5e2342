"""Train the custom-layer example: a tiny MLP on the digits with a registered Swish layer.

Run from the repository root: python examples/swish/train.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))


def main() -> None:
    import keras
    from sklearn.datasets import load_digits

    from examples.swish.swishnet.layers import Swish

    keras.utils.set_random_seed(3)
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target
    inputs = keras.Input((64,), name="pixels")
    h = Swish(beta=1.5)(keras.layers.Dense(32)(inputs))
    outputs = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1400], y[:1400], epochs=10, verbose=0)
    print(f"held-out accuracy: {model.evaluate(x[1400:], y[1400:], verbose=0)[1]:.4f}")
    model.save(HERE / "swish.keras")
    np.savez_compressed(HERE / "data.npz", pixels=x[1400:], labels=y[1400:])


if __name__ == "__main__":
    main()
