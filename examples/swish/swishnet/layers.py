"""A custom activation layer, registered under a package prefix ("swishnet>Swish").

The saved model refers to it by that registered name; the recipe's custom_objects registry
maps the name to this import path so tfbuild can load the model.
"""

import keras


@keras.saving.register_keras_serializable(package="swishnet")
class Swish(keras.layers.Layer):
    def __init__(self, beta: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.beta = beta

    def call(self, inputs):
        return inputs * keras.ops.sigmoid(self.beta * inputs)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}
