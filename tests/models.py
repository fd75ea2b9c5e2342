"""Tiny Keras models for tests, saved into a project (seconds to build, real weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

RNG = np.random.default_rng(0)


def keras():
    import keras as k

    return k


def dense_classifier(path: Path | None = None, *, features: int = 8, classes: int = 4, seed: int = 0,
                     hidden: int = 16):
    k = keras()
    k.utils.set_random_seed(seed)
    inputs = k.Input((features,), name="features")
    hidden = k.layers.Dense(hidden, activation="relu")(inputs)
    outputs = k.layers.Dense(classes, activation="softmax", name="probs")(hidden)
    model = k.Model(inputs, outputs)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    return model


def features(count: int = 64, width: int = 8, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((count, width), dtype=np.float32)


def write_dense_project(project, *, targets: str = "fp32: {}", extra: str = "", name: str = "clf",
                        hidden: int = 16) -> None:
    """A one-recipe project: dense classifier + calibration/evaluation data."""
    dense_classifier(project.path(f"models/{name}.keras"), hidden=hidden)
    x = features()
    project.save_arrays(f"data/{name}.npz", features=x, labels=np.arange(len(x)) % 4)
    indented = "\n".join("  " + line for line in targets.strip().splitlines())
    project.recipe(name, f"""\
tfbuild: 1
model:
  source: models/{name}.keras
data:
  calibration: data/{name}.npz
  evaluation: data/{name}.npz
targets:
{indented}
{extra}""")


# A project module of model factories (py: sources) and a py: data source, shared by tests.
FACTORIES = """\
import keras


class Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.head = keras.layers.Dense(3)

    def call(self, x):
        return self.head(self.hidden(x))


def subclassed():
    keras.utils.set_random_seed(0)
    return Net()


def two_in_two_out():
    keras.utils.set_random_seed(0)
    a = keras.Input((5,), name="left")
    b = keras.Input((3,), name="right")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    return keras.Model([a, b], {"score": keras.layers.Dense(1)(h),
                                "classes": keras.layers.Dense(4, activation="softmax")(h)})


def sub_data():
    import numpy as np
    return {"x": np.random.default_rng(0).random((10, 7), dtype=np.float32)}


def variable_length():
    keras.utils.set_random_seed(0)
    x = keras.Input((None, 4), name="frames")
    h = keras.layers.Dense(6, activation="relu")(x)
    return keras.Model(x, keras.layers.GlobalAveragePooling1D(name="pooled")(h))
"""
