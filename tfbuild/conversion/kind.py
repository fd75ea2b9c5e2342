"""What a model source kind is (`Kind`), and the tool versions kinds put in their keys.

A kind module (keras_file, saved_model, factory, ...) defines one `Kind`; the registry
(conversion.sources) lists them. Both import this module, which imports no kind: no circle.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

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
