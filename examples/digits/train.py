"""Train the digits example: a small CNN on scikit-learn's bundled 8x8 digits (no download).

Writes digits.keras, calibration.npz (training images), evaluation.npz (held-out images and
labels) and labels.txt next to this file. Deterministic given the seed; takes a few seconds.
Run from the repository root: python examples/digits/train.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 7


def load_digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]  # (n, 8, 8, 1) in [0, 1]
    return train_test_split(images, digits.target.astype("int64"), test_size=0.25,
                            random_state=SEED, stratify=digits.target)


def build_model():
    import keras

    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="digits")


def main() -> None:
    import keras

    keras.utils.set_random_seed(SEED)
    x_train, x_test, y_train, y_test = load_digits_split()
    model = build_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=15, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"held-out accuracy: {accuracy:.4f}")
    model.save(HERE / "digits.keras")
    save_data(HERE, x_train, x_test, y_test)


def save_data(folder: Path, x_train, x_test, y_test) -> None:
    """Calibration and evaluation sets (channel-last images) and the labels, beside the model."""
    np.savez_compressed(folder / "calibration.npz", image=x_train[:200])
    np.savez_compressed(folder / "evaluation.npz", image=x_test, labels=y_test)
    (folder / "labels.txt").write_text("\n".join(["zero", "one", "two", "three", "four", "five",
                                                  "six", "seven", "eight", "nine"]) + "\n")


if __name__ == "__main__":
    main()
