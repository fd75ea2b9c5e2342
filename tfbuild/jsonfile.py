"""tfbuild's own JSON files (`tfbuild.lock`, `.tfbuild/*.json`), read strictly.

These files are written by tfbuild, but then live on: git merges the lock (conflict markers),
a killed machine truncates a file, a hand edit puts a list where an object was. A reader that
returned `{}` for all of these made a damaged lock look like a missing one, and a reader that
trusted the types let `entry["outputs"]` crash a build with a traceback. So every read says
what it found: a value, or the damage, located by line and key path, for the caller to decide
whether to stop (the committed lock under `tfbuild check`) or to rebuild what the file can no
longer vouch for (the build state, the caches).

Shapes are plain data: a type (or a tuple of types), `{field: shape}` for an object with those
fields (`"name?"` marks an optional one; other fields are allowed), `MapOf(shape)` for an object
of any keys, `ListOf(shape)`, `OneOf(values)` for an enumeration, `Maybe(shape)` for null or a
`shape`, `object` for any value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from tfbuild.errors import UserError

# git writes conflict markers of 7 characters at the start of a line ("|||||||" with diff3).
CONFLICT_MARKER = re.compile(r"^(<{7}|\|{7}|={7}|>{7})(?: |\r?$)", re.MULTILINE)
CONFLICT = "merge conflict marker"


@dataclass(frozen=True)
class Damage:
    """Why a file cannot be read as written: `line 3: merge conflict marker`."""

    line: int | None
    cause: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.cause}" if self.line else self.cause


@dataclass(frozen=True)
class Document:
    exists: bool
    text: str = ""
    value: object = None
    damage: Damage | None = None

    def problem(self, shape) -> Damage | None:
        """Damage if the parsed value has not `shape`."""
        return mismatch(self.text, self.value, shape)


def read(path: Path) -> Document:
    """A JSON file as a Document: missing, damaged (value None), or parsed (shape unchecked)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Document(exists=False)
    except OSError as err:
        raise UserError(f"cannot read it: {err.strerror}", file=str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return Document(True, "", None, Damage(data.count(b"\n", 0, err.start) + 1, "not UTF-8 text"))
    value, damage = parse(text)
    return Document(True, text, value, damage)


def read_cache(path: Path) -> dict:
    """A cache file's object, or {} when it is missing, unreadable or damaged in any way: a
    cache is rebuilt, never trusted, and never a reason to stop a build."""
    try:
        value = read(path).value
    except UserError:
        return {}
    return value if isinstance(value, dict) else {}


def parse(text: str) -> tuple[object, Damage | None]:
    if not text.strip():
        return None, Damage(1, "empty file")
    marker = CONFLICT_MARKER.search(text)
    if marker:
        return None, Damage(text.count("\n", 0, marker.start()) + 1, CONFLICT)
    try:
        return json.loads(text), None
    except json.JSONDecodeError as err:
        what = err.msg.removesuffix(" starting at").lower()
        return None, Damage(err.lineno, f"not valid JSON at column {err.colno}: {what}")
    except RecursionError:
        return None, Damage(None, "not valid JSON (nested too deeply)")


def conflict_sides(text: str) -> tuple[str, str] | None:
    """The two versions git merged, from text with conflict markers: every line outside the
    conflicts plus `ours` (resp. `theirs`) of each conflict; the diff3 base is dropped.
    None if the markers do not nest as git writes them."""
    ours: list[str] = []
    theirs: list[str] = []
    section = None  # None outside a conflict, then "ours", "base", "theirs"
    for line in text.splitlines(keepends=True):
        marker = CONFLICT_MARKER.match(line)
        kind = marker.group(1)[0] if marker else None
        if kind == "<" and section is None:
            section = "ours"
        elif kind == "|" and section == "ours":
            section = "base"
        elif kind == "=" and section in ("ours", "base"):
            section = "theirs"
        elif kind == ">" and section == "theirs":
            section = None
        elif kind is not None:
            return None
        else:
            if section in (None, "ours"):
                ours.append(line)
            if section in (None, "theirs"):
                theirs.append(line)
    return None if section is not None else ("".join(ours), "".join(theirs))


class MapOf(NamedTuple):
    value: object


class ListOf(NamedTuple):
    item: object


class OneOf(NamedTuple):
    values: frozenset


class Maybe(NamedTuple):
    """null, or a value of `shape`."""

    shape: object


def shape_problem(value, shape, where: tuple[str, ...] = ()) -> tuple[tuple[str, ...], str] | None:
    """(key path, what is wrong) for the first place `value` departs from `shape`, else None."""
    if isinstance(shape, Maybe):
        return None if value is None else shape_problem(value, shape.shape, where)
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return where, f"expected an object, found {_kind(value)}"
        for name, field_shape in shape.items():
            optional = name.endswith("?")
            name = name.rstrip("?")
            if name not in value:
                if optional:
                    continue
                return where + (name,), "missing"
            found = shape_problem(value[name], field_shape, where + (name,))
            if found:
                return found
        return None
    if isinstance(shape, (MapOf, ListOf)):
        container = dict if isinstance(shape, MapOf) else list
        if not isinstance(value, container):
            return where, f"expected {_TYPE_NAMES[container]}, found {_kind(value)}"
        for key, item in value.items() if container is dict else enumerate(value):
            found = shape_problem(item, shape[0], where + (str(key),))
            if found:
                return found
        return None
    if isinstance(shape, OneOf):
        if isinstance(value, (str, int, float, bool, type(None))) and value in shape.values:
            return None
        return where, f"expected one of {', '.join(sorted(map(str, shape.values)))}, found {_kind(value)}"
    types = shape if isinstance(shape, tuple) else (shape,)
    if object in types or isinstance(value, types) and (bool in types or not isinstance(value, bool)):
        return None
    return where, f"expected {' or '.join(_TYPE_NAMES.get(t, t.__name__) for t in types)}, found {_kind(value)}"


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", type(None): "null",
               bool: "true or false", dict: "an object", list: "a list", object: "a value"}


def _kind(value) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        shown = json.dumps(value)
        return f"{shown[:40]}{'...' if len(shown) > 40 else ''}"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def mismatch(text: str, value, shape, where: tuple[str, ...] = ()) -> Damage | None:
    """Damage, located in `text`, if `value` (found at key path `where`) has not `shape`."""
    found = shape_problem(value, shape, where)
    if found is None:
        return None
    path, message = found
    return Damage(line_of(text, path), f"{'.'.join(path)}: {message}" if path else message)


def line_of(text: str, path: tuple[str, ...]) -> int | None:
    """The line where a key path starts, found by its keys in order (tfbuild writes each key
    once per object): the line of the deepest key found, line 1 if none is; None without text."""
    if not text:
        return None
    position = 0
    for key in path:
        found = text.find(json.dumps(key) + ":", position)
        if found < 0:
            break
        position = found
    return text.count("\n", 0, position) + 1
