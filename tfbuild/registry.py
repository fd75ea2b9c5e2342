"""Custom objects and `py:` sources: import paths named in a recipe.

Two halves on purpose: `source_files` finds the files behind an import path *without importing
them* (the planner hashes them on every run, and importing user code could pull in TensorFlow);
`load_object` imports for real, and only runs in a conversion worker.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from pathlib import Path

from tfbuild.errors import UserError

IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def parse_import_path(spec: str, *, file: str, key: str) -> tuple[str, str]:
    if not IMPORT_PATH.match(spec):
        raise UserError(f"invalid import path {spec!r}", file=file, key=key,
                        expected="package.module:Attribute, e.g. mylayers.activations:Swish")
    module, attribute = spec.split(":", 1)
    return module, attribute


def _module_file(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def source_files(spec: str, search_roots: list[Path], *, file: str, key: str) -> list[Path]:
    """The files whose edits can change what an import path yields, found on the search roots:
    the module, the package __init__ files above it, and, transitively, every module of the
    project it imports (absolute or relative imports, read with ast; nothing runs). Modules
    installed elsewhere return [] and are covered by `distribution_version`; a module found
    nowhere is a user error.
    """
    module, _ = parse_import_path(spec, file=file, key=key)
    for root in search_roots:
        if _module_file(root, module) is not None:
            return sorted(_project_closure(root, module))
    if _installed_elsewhere(module.split(".")[0]):
        return []
    raise UserError(f"cannot find module {module!r} for {spec!r}", file=file, key=key,
                    expected="a module importable from the project root",
                    hint="check the spelling, or install the package that provides it")


def _parsed(path: Path):
    """The module's syntax tree, or the exception reading it raised; parsed once per run even
    though import-following and the attribute check both need it."""
    st = path.stat()
    return _parse_cached(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=None)
def _parse_cached(path: str, mtime_ns: int, size: int):
    import ast

    try:
        return ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as err:
        return err


def _with_packages(root: Path, dotted: str) -> list[tuple[str, Path]]:
    """The module and every package above it that has an __init__ (they run on import)."""
    parts = dotted.split(".")
    found = []
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        path = _module_file(root, name)
        if path is not None:
            found.append((name, path))
    return found


def _imports(path: Path, dotted: str) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved)."""
    import ast

    tree = _parsed(path)
    if isinstance(tree, Exception):
        return set()  # check_attribute or the worker reports an unreadable module
    package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {n for n in names if n}


def _project_closure(root: Path, module: str) -> set[Path]:
    seen: dict[str, Path] = {}
    pending = [module]
    while pending:
        for name, path in _with_packages(root, pending.pop()):
            if name not in seen:
                seen[name] = path
                pending.extend(_imports(path, name))
    return set(seen.values())


def check_attribute(spec: str, search_roots: list[Path], *, file: str, key: str) -> None:
    """Fail at planning, not after TensorFlow loaded in a worker, when a module in the project
    plainly lacks the named attribute. Read with ast (nothing runs); modules with star imports
    or a module-level __getattr__ are given the benefit of the doubt."""
    import ast

    module, attribute = parse_import_path(spec, file=file, key=key)
    path = next((f for f in (_module_file(root, module) for root in search_roots) if f), None)
    if path is None:
        return
    tree = _parsed(path)
    if isinstance(tree, Exception):
        raise UserError(f"cannot read module {module!r}: {tree}", file=file, key=key)
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in ast.walk(ast.Module(body=[ast.Expr(t) for t in targets], type_ignores=[]))
                         if isinstance(t, ast.Name))
        elif not isinstance(node, ast.Expr):
            return  # if/try/with at module level may define names conditionally
    if "__getattr__" in names or attribute.split(".")[0] in names:
        return
    raise UserError(f"module {module!r} ({path.name}) has no {attribute.split('.')[0]!r}", file=file,
                    key=key, expected=f"one of: {', '.join(sorted(n for n in names if not n.startswith('_'))) or '(none)'}")


def _installed_elsewhere(top_level: str) -> bool:
    import importlib.util

    if top_level in sys.builtin_module_names:
        return True
    try:
        return importlib.util.find_spec(top_level) is not None
    except (ImportError, ValueError):
        return False


def distribution_version(spec: str) -> tuple[str, str] | None:
    """(distribution, version) providing an import path's top-level package, if installed."""
    from importlib.metadata import packages_distributions, version

    top_level = spec.removeprefix("py:").split(".", 1)[0].split(":", 1)[0]
    for dist in packages_distributions().get(top_level, []):
        return dist, version(dist)
    return None


def load_object(spec: str, *, file: str, key: str):
    """Import `package.module:Attribute` for real (conversion workers only)."""
    module_name, attribute = parse_import_path(spec, file=file, key=key)
    try:
        target = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"cannot import {module_name!r}: {err}", file=file, key=key,
                        expected="a module importable from the project root") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UserError(f"module {module_name!r} has no attribute {attribute!r}", file=file,
                            key=key, expected="package.module:Attribute naming an existing object") from None
    return target
