"""The registries and the import graph, checked without TensorFlow.

Quantization modes (conversion.modes) and model source kinds (conversion.sources) are the places
new capabilities plug in; the import graph keeps executors below the scheduler, TensorFlow in
one module, and no module in a circle.
"""

from __future__ import annotations

import ast
import sys
import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from tfbuild.conversion import modes, sources
from tfbuild.errors import UserError
from tfbuild.recipe import ModelSection, Quantize, Target

PACKAGE = Path(__file__).resolve().parents[2] / "tfbuild"


def test_the_recipe_schema_offers_exactly_the_registered_modes():
    assert typing.get_args(Quantize) == tuple(modes.MODES)
    for name, mode in modes.MODES.items():
        assert Target(quantize=name).quantize == name
        assert mode.thresholds, f"{name} has default thresholds"
        for io in ("float32", "int8", "uint8", "int16"):
            allowed = io in mode.io
            try:
                Target(quantize=name, io=io)
            except ValidationError as err:
                assert not allowed and f"io: {io} needs quantize:" in str(err)
            else:
                assert allowed


def test_float_fallback_is_offered_by_the_modes_whose_quantizer_keeps_layers_in_float():
    for name, mode in modes.MODES.items():
        if mode.float_fallback:
            assert Target(quantize=name, float_fallback="auto").float_fallback == "auto"
        else:
            with pytest.raises(ValidationError, match="float_fallback needs quantize: int8"):
                Target(quantize=name, float_fallback="auto")
    assert modes.calibrates("int8") and not modes.calibrates("float16") and not modes.calibrates(None)


@pytest.mark.parametrize("spec, kind", [
    ("models/m.keras", "keras-file"), ("models/m.h5", "keras-file"), ("models/m.hdf5", "keras-file"),
    ("models/saved", "saved-model"), ("py:pkg.factories:build", "py-factory")])
def test_each_source_is_claimed_by_one_kind(tmp_path, spec, kind):
    (tmp_path / "models/saved").mkdir(parents=True)
    found = sources.kind_of(ModelSection(source=spec), tmp_path, file="recipes/m.yaml")
    assert found.name == kind
    assert set(found.tools) <= set(sources.TOOL_DISTRIBUTIONS)


def test_an_unknown_source_names_every_kind(tmp_path):
    with pytest.raises(UserError) as raised:
        sources.kind_of(ModelSection(source="models/m.onnx"), tmp_path, file="recipes/m.yaml")
    assert raised.value.key == "model.source"
    assert all(kind.described in raised.value.expected for kind in sources._kinds())


def test_kinds_check_files_cheaply(tmp_path):
    keras = sources.kind_of(ModelSection(source="m.keras"), tmp_path, file="r.yaml")
    (tmp_path / "m.keras").write_text("version https://git-lfs.github.com/spec/v1\n")
    (tmp_path / "m.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    assert keras.check(tmp_path / "m.keras") == "not a zip archive"
    assert keras.check(tmp_path / "m.h5") is None
    (tmp_path / "empty").mkdir()
    saved = sources.kind_of(ModelSection(source="empty"), tmp_path, file="r.yaml")
    assert saved.check(tmp_path / "empty") == "directory is not a SavedModel (no saved_model.pb)"


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.If) and top_level_only:  # `if TYPE_CHECKING:` imports nothing at run time
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            # `from tfbuild import jobs` imports tfbuild.jobs (the package itself only runs __init__)
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            found.update(submodules if (PACKAGE.parent / node.module.replace(".", "/")).is_dir() else {node.module})
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _module_graph(*, top_level_only: bool) -> dict[str, set[str]]:
    modules = {".".join(("tfbuild", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path, top_level_only=top_level_only) if m in modules and m != name}
            for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circles_not_even_through_imports_inside_functions():
    assert _cycle(_module_graph(top_level_only=False)) is None


def test_executors_never_import_the_scheduler_or_the_cli():
    graph = _module_graph(top_level_only=False)
    for executor in ("tfbuild.pool", "tfbuild.ray_executor", "tfbuild.remote_jobs", "tfbuild.worker",
                     "tfbuild.staging", "tfbuild.jobs", "tfbuild.cache"):
        assert not graph[executor] & {"tfbuild.run", "tfbuild.api", "tfbuild.cli"}, executor


def test_tensorflow_is_imported_in_functions_only_and_the_module_itself_in_one_place():
    for path in PACKAGE.rglob("*.py"):
        assert not any(m.split(".")[0] == "tensorflow" for m in _imports(path, top_level_only=True)), path
    importers = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                 if "tensorflow" in _imports(p, top_level_only=False)]
    assert importers == ["conversion/tf.py"]


def test_planning_modules_import_neither_tensorflow_nor_numpy():
    import subprocess

    code = ("import sys, tfbuild.cli, tfbuild.api, tfbuild.plan, tfbuild.conversion.sources as s; s._kinds(); "
            "print(sorted(m for m in ('tensorflow', 'numpy', 'keras', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_scheduler_builds_over_a_fake_executor_without_tensorflow(tmp_path):
    """In a process of its own: the test process may have imported TensorFlow for other tests."""
    import subprocess

    code = ("import sys; from pathlib import Path; from fakes import FakeExecutor, build, make_project; "
            f"outcomes = build(make_project(Path({str(tmp_path)!r}), 'a'), FakeExecutor()); "
            "print(sorted(o.status for o in outcomes.values()), 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent).stdout
    assert out.strip() == "['built', 'built'] False"
