"""The one place TensorFlow is imported: lazily, inside functions, in worker processes only."""

from __future__ import annotations

import os


def tensorflow():
    """The `tensorflow` module, imported on first use with its C++ and Python logs quieted."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def warm_up() -> None:
    """Import what every job needs, before the job is known."""
    from tfbuild import verify

    tensorflow()
    import keras  # noqa: F401

    verify.load_runtime()
