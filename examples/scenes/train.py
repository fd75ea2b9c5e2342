"""Train the scenes example: a small RGB classifier of 16x16 photo patches (no download).

The two photos scikit-learn ships (`load_sample_images`: a pagoda above a lake, a dahlia) are
cut into patches from hand-drawn regions, one class per region kind: sky, water, pagoda, trees,
petals, leaves. Training and evaluation patches come from the same regions at other random
places (patches may overlap): the example is about converting and shipping an image classifier,
not about generalising to new photos. The model takes pixels as they come (0..255, float32) and
rescales them itself, so MediaPipe's normalization is the identity (mean 0, std 1) and a uint8
input reads raw pixels.

Writes scenes.keras, calibration.npz (training patches, plus a black and a white one so that an
integer input's range is the full 0..255), evaluation.npz (patches and labels) and labels.txt
next to this file. Deterministic given the seed; a few seconds.
Run from the repository root: python examples/scenes/train.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 11
SIZE = 16  # patch side, pixels
# Class -> (photo index in load_sample_images, regions as (left, top, right, bottom)).
REGIONS = {
    "sky": (0, [(400, 10, 630, 110), (0, 10, 150, 90)]),
    "water": (0, [(360, 240, 540, 330)]),
    "pagoda": (0, [(150, 150, 310, 330)]),
    "trees": (0, [(560, 230, 640, 420), (0, 360, 180, 427)]),
    "petals": (1, [(240, 140, 380, 280)]),
    "leaves": (1, [(0, 0, 140, 427), (500, 0, 640, 300)]),
}


def patches(count_per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count_per_class` random patches of every class, shuffled: (n, SIZE, SIZE, 3) float32 in
    0..255, and the class indices."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    images, labels = [], []
    for label, (photo, regions) in enumerate(REGIONS.values()):
        for i in range(count_per_class):
            left, top, right, bottom = regions[i % len(regions)]
            x = rng.integers(left, right - SIZE + 1)
            y = rng.integers(top, bottom - SIZE + 1)
            images.append(photos[photo][y:y + SIZE, x:x + SIZE])
            labels.append(label)
    order = rng.permutation(len(images))
    return np.stack(images)[order].astype("float32"), np.asarray(labels, dtype="int64")[order]


def build_model():
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(REGIONS), activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="scenes")


def main() -> None:
    import keras

    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    x_train, y_train = patches(300, rng)
    x_test, y_test = patches(30, rng)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"accuracy on the evaluation patches: {accuracy:.4f}")
    model.save(HERE / "scenes.keras")
    extremes = np.stack([np.zeros((SIZE, SIZE, 3)), np.full((SIZE, SIZE, 3), 255.0)]).astype("float32")
    np.savez_compressed(HERE / "calibration.npz", image=np.concatenate([extremes, x_train[:98]]))
    np.savez_compressed(HERE / "evaluation.npz", image=x_test, labels=y_test)
    (HERE / "labels.txt").write_text("\n".join(REGIONS) + "\n")


if __name__ == "__main__":
    main()
