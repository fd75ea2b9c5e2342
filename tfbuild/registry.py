"""Custom objects and `py:` sources: import paths named in a recipe.

Two halves on purpose: `source_files` finds the files behind an import path *without importing
them* (the planner hashes them on every run, and importing user code could pull in TensorFlow);
`load_object` imports for real, and only runs in a conversion worker.
"""

from __future__ import annotations

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
    """The files whose edits can change what an import path yields, found on the search roots.

    For a module inside a package: every .py file of its package directory (sibling helpers it
    imports with `from .ops import f`), plus the __init__ files above it. For a top-level module:
    the file itself. Imports reaching into other packages are not followed (documented).
    Modules installed elsewhere return [] and are covered by `distribution_version`; a module
    found nowhere is a user error.
    """
    module, _ = parse_import_path(spec, file=file, key=key)
    parts = module.split(".")
    for root in search_roots:
        found = _module_file(root, module)
        if found is None:
            continue
        packages = [_module_file(root, ".".join(parts[:i])) for i in range(1, len(parts))]
        siblings = sorted(p for p in found.parent.rglob("*.py") if "__pycache__" not in p.parts) \
            if len(parts) > 1 else []
        return sorted({p for p in packages if p is not None} | set(siblings) | {found})
    if _installed_elsewhere(parts[0]):
        return []
    raise UserError(f"cannot find module {module!r} for {spec!r}", file=file, key=key,
                    expected="a module importable from the project root",
                    hint="check the spelling, or install the package that provides it")


def check_attribute(spec: str, search_roots: list[Path], *, file: str, key: str) -> None:
    """Fail at planning, not after TensorFlow loaded in a worker, when a module in the project
    plainly lacks the named attribute. Read with ast (nothing runs); modules with star imports
    or a module-level __getattr__ are given the benefit of the doubt."""
    import ast

    module, attribute = parse_import_path(spec, file=file, key=key)
    path = next((f for f in (_module_file(root, module) for root in search_roots) if f), None)
    if path is None:
        return
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"cannot read module {module!r}: {err}", file=file, key=key) from None
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
