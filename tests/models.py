"""Tiny Keras models for tests, saved into a project (seconds to build, real weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

RNG = np.random.default_rng(0)


def keras():
    import keras as k

    return k


def saved(model, path: Path | None):
    """The model, saved to `path` first when one is given."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    return model


def dense_classifier(path: Path | None = None, *, features: int = 8, classes: int = 4, seed: int = 0,
                     hidden: int = 16):
    k = keras()
    k.utils.set_random_seed(seed)
    inputs = k.Input((features,), name="features")
    hidden = k.layers.Dense(hidden, activation="relu")(inputs)
    outputs = k.layers.Dense(classes, activation="softmax", name="probs")(hidden)
    model = k.Model(inputs, outputs)
    return saved(model, path)


def features(count: int = 64, width: int = 8, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((count, width), dtype=np.float32)


def write_dense_project(project, *, targets: str = "fp32: {}", extra: str = "", name: str = "clf",
                        hidden: int = 16) -> None:
    """A one-recipe project: dense classifier + calibration/evaluation data."""
    dense_classifier(project.path(f"models/{name}.keras"), hidden=hidden)
    x = features()
    project.save_arrays(f"data/{name}.npz", features=x, labels=np.arange(len(x)) % 4)
    write_recipe(project, name, targets, extra)


def write_recipe(project, name: str, targets: str, extra: str = "") -> None:
    """recipes/<name>.yaml over models/<name>.keras, with data/<name>.npz for both data sets."""
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


def outlier_classifier(path: Path | None = None, *, outliers: int = 1, samples: np.ndarray | None = None,
                       seed: int = 0):
    """A classifier with outlier activations: each of `outliers` narrow Dense layers has one channel
    about 1000x larger than the others, which the next layer ignores. Per-tensor int8 activations
    stretch the scale to that channel, every other channel rounds to zero, and the prediction is
    lost; keeping each outlier layer and its consumer in float brings it back. The wide first
    layers hold most of the weights, so the file stays small with a few layers in float. The
    head's bias is centred on `samples`, so that the classes are balanced on them."""
    k = keras()
    k.utils.set_random_seed(seed)
    x = k.Input((32,), name="features")
    h = k.layers.Dense(256, activation="relu", name="wide")(x)
    h = k.layers.Dense(32, activation="relu", name="narrow")(h)
    for i in range(outliers):
        h = k.layers.Dense(16, name=f"outlier{i + 1}")(h)
    y = k.layers.Dense(4, activation="softmax", name="probs")(h)
    model = k.Model(x, y)
    for i in range(outliers):
        layer = model.get_layer(f"outlier{i + 1}")
        w, b = layer.get_weights()
        if i:
            w[0, :] = 0.0  # ignores the previous outlier channel
        w[:, 0] *= 2000.0
        b[0] = 500.0
        layer.set_weights([w, b])
    head = model.get_layer("probs")
    w, b = head.get_weights()
    w[0, :] = 0.0
    w *= 4
    if samples is not None:
        hidden = np.asarray(k.Model(x, head.input)(samples))
        b = -np.median(hidden @ w, axis=0)
    head.set_weights([w, b])
    return saved(model, path)


def write_outlier_project(project, *, targets: str, outliers: int = 1, name: str = "spiky") -> None:
    """A one-recipe project around `outlier_classifier`, labelled by the float model itself."""
    x = features(200, width=32, seed=3)
    model = outlier_classifier(project.path(f"models/{name}.keras"), outliers=outliers, samples=x)
    project.save_arrays(f"data/{name}.npz", features=x, labels=np.asarray(model(x)).argmax(1))
    write_recipe(project, name, targets)


def rgb_classifier(path: Path | None = None, *, size: int = 4, classes: int = 3, seed: int = 0):
    """A tiny image classifier: [size, size, 3] pixels (0..255) rescaled inside the model, as an
    app's camera frames arrive."""
    k = keras()
    k.utils.set_random_seed(seed)
    inputs = k.Input((size, size, 3), name="image")
    x = k.layers.Flatten()(k.layers.Rescaling(1 / 255)(inputs))
    outputs = k.layers.Dense(classes, activation="softmax", name="probs")(x)
    model = k.Model(inputs, outputs)
    return saved(model, path)


def pixels(count: int = 48, size: int = 4, seed: int = 2) -> np.ndarray:
    """Random pixels in 0..255 as float32, the first sample black and the second white (so an
    integer input's calibrated range is the whole pixel range)."""
    x = np.random.default_rng(seed).integers(0, 256, (count, size, size, 3)).astype(np.float32)
    x[0], x[1] = 0.0, 255.0
    return x
