"""tfbuild: a make-like build tool from Keras models to verified .tflite files and mobile loaders."""

__version__ = "0.3.0"
RECIPE_SCHEMA_VERSION = 1
