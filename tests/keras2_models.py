"""Keras 2 files as other projects ship them, written by tf-keras (run in its own process)."""
import json
import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import h5py
import numpy as np
import tf_keras as K

out = sys.argv[1]
L = K.layers
rng = np.random.default_rng(0)


def as_keras_2_2(path):
    """What Keras 2.2 wrote, which Keras 3 still reads: its version, and no `time_major` (a key
    later tf.keras versions added to recurrent layers)."""
    with h5py.File(path, "r+") as handle:
        text = handle.attrs["model_config"]
        config = json.loads(text.decode() if isinstance(text, bytes) else text)

        def strip(node):
            if isinstance(node, dict):
                node.pop("time_major", None)
                for value in node.values():
                    strip(value)
            elif isinstance(node, list):
                for value in node:
                    strip(value)
        strip(config)
        handle.attrs["model_config"] = json.dumps(config)
        handle.attrs["keras_version"] = "2.2.4"


# chord: a CNN + bidirectional GRU (Keras 2.2's hard_sigmoid) with two per-frame softmax outputs
K.utils.set_random_seed(0)
x = K.Input((20, 8), name="spectrum")
h = L.Conv1D(8, 3, padding="same", activation="relu")(x)
h = L.Bidirectional(L.GRU(6, return_sequences=True, recurrent_activation="hard_sigmoid",
                          reset_after=False))(h)
chords = L.TimeDistributed(L.Dense(5, activation="softmax"), name="chords")(h)
bass = L.TimeDistributed(L.Dense(3, activation="softmax"), name="bass")(h)
model = K.Model(x, [chords, bass])
model.set_weights([w * 2.5 for w in model.get_weights()])  # gates far from 0, where the two differ
model.save(f"{out}/chord.h5")
as_keras_2_2(f"{out}/chord.h5")
spectrum = (rng.standard_normal((24, 20, 8)) * 2).astype("float32")
scores = model.predict(spectrum, verbose=0)
np.savez(f"{out}/chord_eval.npz", spectrum=spectrum, labels=scores[0].argmax(-1))
np.savez(f"{out}/chord_calib.npz", spectrum=(rng.standard_normal((32, 20, 8)) * 2).astype("float32"))
np.savez(f"{out}/chord_keras2.npz", chords=scores[0], bass=scores[1])

# slash: an input named the way Keras 2 allowed and Keras 3 refuses
K.utils.set_random_seed(1)
x = K.Input((6,), name="cqt/mag")
K.Model(x, L.Dense(3, activation="softmax", name="probs")(L.Dense(8, activation="relu")(x))).save(f"{out}/slash.h5")
as_keras_2_2(f"{out}/slash.h5")
np.savez(f"{out}/slash.npz", **{"cqt/mag": rng.random((16, 6), dtype=np.float32)})
