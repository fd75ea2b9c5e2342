"""The registry of model source kinds: which kind a recipe's `model.source` is, and what each
kind says about itself (a `Kind`, conversion.kind).

A kind answers, without TensorFlow: does it take this source (`matches`); is the source Python
code whose module files enter the key (`python`); is the file what it claims (`check`, cheap:
magic bytes, a zip's directory); which tools' versions enter its targets' keys (`tools`, plus
`key_versions` for what depends on the file, like the Keras that wrote it). Loading (`load`)
happens in a worker and imports what the kind needs there. Adding a kind is one module that
defines a `Kind` (conversion.kind), plus one line in `_kinds()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tfbuild.conversion import factory, keras_file, saved_model, torch_source
from tfbuild.conversion.kind import TOOL_DISTRIBUTIONS, VERSIONS_SEAM, Kind, tool_versions
from tfbuild.errors import UserError
from tfbuild.jobs import enter_stage

if TYPE_CHECKING:
    from tfbuild.conversion.source import Source
    from tfbuild.recipe import ModelSection, Recipe


def _kinds() -> list[Kind]:
    """Every kind, in the order they are asked (the first that matches takes the source); read
    at each call, so that a test can replace one."""
    return [torch_source.KIND, torch_source.PROGRAM_KIND, factory.KIND, saved_model.KIND, keras_file.KIND]


def kind_of(model: "ModelSection", root: Path, *, file: str) -> Kind:
    """The kind that takes this source, or a user error listing the kinds there are."""
    spec = model.source
    path = None if spec.startswith("py:") else root / spec
    found = next((kind for kind in _kinds() if kind.matches(model, path)), None)
    if found is None:
        raise UserError(f"unsupported model source {spec!r}", file=file, key="model.source",
                        expected=", ".join(kind.described for kind in _kinds()))
    return found


def load(recipe: "Recipe", root: Path, file: str) -> "Source":
    """The recipe's model, loaded by its kind (in a worker)."""
    enter_stage("loading the model")
    return kind_of(recipe.model, root, file=file).load(recipe, root, file)


__all__ = ["TOOL_DISTRIBUTIONS", "VERSIONS_SEAM", "Kind", "kind_of", "load", "tool_versions"]
