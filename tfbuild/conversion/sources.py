"""The registry of model source kinds: which kind a recipe's `model.source` is, and what each
kind says about itself.

A kind answers, without TensorFlow: does it take this source (`matches`); is the source Python
code whose module files enter the key (`python`); is the file what it claims (`check`, cheap:
magic bytes, a zip's directory); which tools' versions enter its targets' keys (`tools`, plus
`key_versions` for what depends on the file, like the Keras that wrote it). Loading (`load`)
happens in a worker and imports what the kind needs there. Adding a kind is one module that
defines a `Kind`, plus one line in `KINDS`.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tfbuild.errors import UserError
from tfbuild.jobs import enter_stage

if TYPE_CHECKING:
    from tfbuild.conversion.source import Source
    from tfbuild.recipe import ModelSection, Recipe

# Each tool by the distributions that may provide it (the first one installed wins).
TOOL_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos", "tf-nightly"),
    "keras": ("keras", "keras-nightly"),
    "ai-edge-litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
    "torch": ("torch",),
    "litert-torch": ("litert-torch", "litert-torch-nightly"),
    "ai-edge-quantizer": ("ai-edge-quantizer", "ai-edge-quantizer-nightly"),
    "litert-converter": ("litert-converter",),
}
TENSORFLOW_TOOLS = ("tensorflow", "keras", "ai-edge-litert")  # TensorFlow's converter, LiteRT's checks
# torch.export, litert-torch's converter (on litert-converter), ai-edge-quantizer, LiteRT's checks
TORCH_TOOLS = ("torch", "litert-torch", "ai-edge-quantizer", "litert-converter", "ai-edge-litert")
VERSIONS_SEAM = "TFBUILD_TOOL_VERSIONS"  # JSON dict; lets tests simulate a tool upgrade


def tool_versions(tools: tuple[str, ...] | None = None) -> dict[str, str]:
    """Versions of the tools that change outputs (all of them, or `tools`), read from package
    metadata: nothing is imported."""
    found = {tool: _installed(tool) for tool in (TOOL_DISTRIBUTIONS if tools is None else tools)}
    simulated = json.loads(os.environ.get(VERSIONS_SEAM) or "{}")
    found.update({tool: value for tool, value in simulated.items() if tools is None or tool in tools})
    return found


@functools.cache
def _installed(tool: str) -> str:
    """The first of the tool's distributions installed, with its version (read once a process)."""
    for dist in TOOL_DISTRIBUTIONS[tool]:
        try:
            return version(dist) if dist == tool else f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return "missing"


def seamed_version(tool: str, installed: Callable[[], str | None]) -> str | None:
    """A tool only some targets depend on: its installed version, or the tests' simulated one."""
    simulated = json.loads(os.environ.get(VERSIONS_SEAM) or "{}")
    return simulated[tool] if tool in simulated else installed()


def _no_problem(path: Path) -> str | None:
    return None


def _no_versions(root: Path, spec: str, digests: Any) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Kind:
    name: str
    described: str  # how a recipe names it, for "expected" in messages
    matches: Callable[["ModelSection", Path | None], bool]  # the section, and root/source (None for py:)
    load: Callable[["Recipe", Path, str], "Source"]  # (recipe, project root, recipe file), in a worker
    check: Callable[[Path], str | None] = _no_problem  # what is wrong with the file, cheaply
    python: bool = False  # the source is a py: spec: its module files enter the key
    tools: tuple[str, ...] = TENSORFLOW_TOOLS
    key_versions: Callable[[Path, str, Any], dict[str, str]] = _no_versions  # (root, spec, digests)


def _kinds() -> list[Kind]:
    from tfbuild.conversion import factory, keras_file, saved_model, torch_source

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
