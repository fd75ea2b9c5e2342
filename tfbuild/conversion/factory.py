"""Source kind `py:package.module:function`: a function that builds (or loads) a Keras model.

Its module's files (and the packages it comes from) enter the key like custom objects do;
nothing is imported at planning but the checks the registry makes of any py: spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tfbuild.conversion.kind import Kind

if TYPE_CHECKING:
    from tfbuild.conversion.source import Source
    from tfbuild.recipe import ModelSection, Recipe


def _matches(model: "ModelSection", path: Path | None) -> bool:
    return model.source.startswith("py:")


def _load(recipe: "Recipe", root: Path, file: str) -> "Source":
    from tfbuild.conversion.keras_model import custom_objects, keras_source
    from tfbuild.registry import load_object

    factory = load_object(recipe.model.source[3:], file=file, key="model.source")
    return keras_source(factory(), recipe, file, objects=custom_objects(recipe, file))


KIND = Kind("py-factory", "py:package.module:function", _matches, _load, python=True)
