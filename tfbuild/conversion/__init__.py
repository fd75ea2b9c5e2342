"""Turning a model source into .tflite files: the seams a new model kind or quantization mode
plugs into.

- `modes`: one entry per quantization mode (what it needs, allows, defaults to, and its
  converter settings).
- `sources`: the registry of model source kinds (which files each reads, how it is checked at
  planning, which tool versions enter the key, how it loads); one module per kind:
  `keras_file`, `saved_model`, `factory`. `source` is what every kind loads into.
- `tf`: the one place TensorFlow is imported (lazily); `tflite_converter`: TensorFlow's
  converter and quantizers driven by a mode; `keras_model`: tracing a Keras model.
- `job`: one job (a recipe's selected targets) run in a worker: load, convert, verify, stage.

Nothing in this package is imported on the planning path except `modes` and `sources`, which
import no TensorFlow.
"""
