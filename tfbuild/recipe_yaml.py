"""Recipe YAML, read and checked before Hydra reads it.

Hydra and OmegaConf trust their input: a self-referencing alias recurses until Python gives
up, an alias bomb expands for minutes, a duplicate key or a malformed defaults list surfaces as
a stack trace without a line. So every YAML file a composition will read (the recipe, the
pieces its defaults list names, pieces chosen by an override) is parsed here first, within
fixed limits and without expanding aliases, and refused in milliseconds with its file and line.

Limits (a hand-written recipe is well under 1 KiB, about 50 values, 5 levels deep):
- MAX_BYTES: 64 KiB per file; the pure-Python parser reads that in about 0.1 s.
- MAX_DEPTH: 32 levels of nesting, six times the deepest real recipe and far below the
  recursion OmegaConf needs per level (about 200 levels exhaust Python's stack).
- MAX_VALUES: 2,000 values per file once aliases are expanded (counted, never expanded), so a
  "billion laughs" is refused at the line where it crosses the limit; OmegaConf copies 2,000
  values, and Hydra composes them, in about 0.2 s.
- MAX_PIECES: 64 files composed into one recipe through defaults lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tfbuild.errors import UserError

MAX_BYTES = 64 * 1024
MAX_DEPTH = 32
MAX_VALUES = 2_000
MAX_PIECES = 64

CORE = "tag:yaml.org,2002:"
ALWAYS_ALLOWED_TAGS = {CORE + "str", CORE + "seq", CORE + "map"}
PLAIN_SCALAR_TAGS = {CORE + "int", CORE + "float", CORE + "bool", CORE + "null"}
PLAIN_VALUES = "plain values: text, numbers, true/false, null, lists and mappings"

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_-]*"
_OPTION = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
ENTRY_KEY = re.compile(rf"^(?P<group>/?{_NAME}(?:/{_NAME})*)(?:@(?P<package>{_NAME}(?:\.{_NAME})*))?$")
OPTION = re.compile(rf"^{_OPTION}(?:/{_OPTION})*$")
DEFAULTS_EXPECTED = '"group@package: option" or "_self_"'


@dataclass(frozen=True)
class YamlFile:
    """One checked YAML file: its plain data and the node graph that knows each value's line."""

    path: Path
    shown: str  # as shown to the user, relative to the project root
    data: Any
    root: yaml.Node | None

    def line_of(self, path: list[str | int] | str | None) -> int | None:
        """1-based line of a key path (`targets.int8` or ["defaults", 0]), if the file has it."""
        if isinstance(path, str):
            path = path.split(".") if path else []
        node, line = self.root, None
        for part in path or []:
            if isinstance(node, yaml.MappingNode):
                pair = next(((k, v) for k, v in node.value if k.value == str(part)), None)
                if pair is None:
                    return None
                line, node = pair[0].start_mark.line + 1, pair[1]
            elif isinstance(node, yaml.SequenceNode) and str(part).isdigit() and int(part) < len(node.value):
                node = node.value[int(part)]
                line = node.start_mark.line + 1
            else:
                return None
        return line


class _Loader(yaml.SafeLoader):
    """A SafeLoader that composes within the limits, refuses duplicate and non-name keys and
    explicit tags, and resolves scalars as OmegaConf does (a date stays text)."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != CORE + "timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, text: str, shown: str):
        super().__init__(text)
        self.shown = shown
        self.depth = 0
        self.values = 0
        self.aliased = False  # whether the count includes aliases expanded
        self.open_anchors: set[str] = set()
        self.sizes: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded

    def refuse(self, message: str, mark, hint: str | None = None, expected: str | None = None) -> UserError:
        return UserError(message, file=self.shown, line=mark.line + 1, hint=hint, expected=expected)

    def count(self, values: int, event) -> None:
        self.values += values
        if self.values <= MAX_VALUES:
            return
        if self.aliased:
            raise self.refuse(f"more than {MAX_VALUES} values once aliases are expanded", event.start_mark,
                              hint="aliases that list other aliases multiply; a recipe needs a few dozen values")
        raise self.refuse(f"more than {MAX_VALUES} values", event.start_mark,
                          expected="a hand-written recipe (they hold a few dozen values)")

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self.open_anchors:
                raise self.refuse(f"alias *{event.anchor} is inside the value it names (&{event.anchor})",
                                  event.start_mark, hint="YAML aliases that refer to themselves are not allowed")
            node = super().compose_node(parent, index)
            self.aliased = True
            self.count(self.sizes.get(id(node), 1), event)
            return node
        self._check_tag(event)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.refuse(f"nesting deeper than {MAX_DEPTH} levels", event.start_mark,
                              hint="a recipe nests a few levels; is a bracket or an indentation off?")
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        before = self.values
        self.count(1, event)
        node = super().compose_node(parent, index)
        self.depth -= 1
        self.open_anchors.discard(event.anchor)
        self.sizes[id(node)] = self.values - before
        return node

    def _check_tag(self, event) -> None:
        """Explicit tags construct Python objects, bytes, sets or dates that a recipe cannot hold."""
        tag = event.tag
        if tag in (None, "!") or tag in ALWAYS_ALLOWED_TAGS:
            return
        if isinstance(event, yaml.ScalarEvent) and tag in PLAIN_SCALAR_TAGS and \
                self.resolve(yaml.ScalarNode, event.value, (True, False)) == tag:
            return
        shown = tag.replace(CORE, "!!")
        raise self.refuse(f"the tag {shown} is not allowed in a recipe", event.start_mark, expected=PLAIN_VALUES)

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen: dict[str, int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == CORE + "null":
                raise self.refuse("a key must be a name, not a list, a mapping or null", key.start_mark)
            if key.value in seen:
                raise self.refuse(f'duplicate key "{key.value}" (also on line {seen[key.value]})', key.start_mark,
                                  hint="a careless merge? keep one of them")
            seen[key.value] = key.start_mark.line + 1
        return node

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as err:  # e.g. `0x_`: an int by pattern only
            raise yaml.constructor.ConstructorError(None, None, f"cannot read this value: {err}",
                                                    node.start_mark) from None


def read(path: Path, shown: str) -> YamlFile:
    """Parse one YAML file within the limits; a UserError with its line for anything wrong."""
    text = _text(path, shown)
    try:
        loader = _Loader(text, shown)  # the reader refuses control characters right here
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as err:
        raise _syntax_error(err, text, shown) from None
    return YamlFile(path=path, shown=shown, data=data, root=root)


def read_recipe(path: Path, shown: str) -> YamlFile:
    found = read(path, shown)
    if not isinstance(found.data, dict):
        raise UserError("a recipe must be a mapping of keys", file=shown,
                        line=found.root.start_mark.line + 1 if found.root is not None else None,
                        expected="`tfbuild: 1`, `model:`, `targets:` ...")
    return found


def _text(path: Path, shown: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as err:
        raise UserError(f"cannot read the file: {err.strerror}", file=shown, expected="a UTF-8 YAML file") from None
    if len(data) > MAX_BYTES:
        raise UserError(f"larger than {MAX_BYTES // 1024} KiB", file=shown,
                        expected="a hand-written recipe (they are well under 1 KiB)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"not UTF-8 text (byte 0x{data[err.start]:02x})", file=shown, line=line,
                        expected="a UTF-8 YAML file") from None


def _syntax_error(err: yaml.YAMLError, text: str, shown: str) -> UserError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is not None:
        line, column = mark.line + 1, mark.column + 1
    elif isinstance(err, yaml.reader.ReaderError):  # a control character: no mark, an offset
        line = text[:err.position].count("\n") + 1
        column = err.position - (text.rfind("\n", 0, err.position) + 1) + 1
    else:
        line = column = None
    problem = getattr(err, "problem", None) or str(err)
    return UserError(f"invalid YAML: {problem}" + (f" (column {column})" if column else ""),
                     file=shown, line=line)


# ---------------------------------------------------------------- defaults lists

@dataclass(frozen=True)
class Piece:
    """A file composed into a recipe, and the key path its keys land under ("" for the top)."""

    package: str
    file: YamlFile


def _is_file(path: Path) -> bool:
    """Path.is_file, False for a name the OS refuses (too long) as for a missing one: a defaults
    list entry or override naming such a file gets the usual located 'no piece' error."""
    try:
        return path.is_file()
    except OSError:
        return False


def check_pieces(recipes_dir: Path, recipe: YamlFile, overrides: list[str]) -> list[Piece]:
    """Validate defaults lists (the recipe's and its pieces', recursively) and read every piece
    a composition would merge, so that Hydra only ever sees files that passed `read`. Returns
    the recipe and its pieces, for `locate`."""
    pieces = _Pieces(recipes_dir, Path(recipe.shown).parent)
    pieces.walk(recipe, group="", package="", chain=[recipe.path])
    for key, option in _chosen_by_overrides(recipes_dir, overrides):
        group, _, package = key.partition("@")
        path = recipes_dir / group / f"{option}.yaml"
        if _is_file(path):
            piece = pieces.read(path)
            pieces.found.append(Piece(_package("", group, package or None), piece))
            pieces.walk(piece, group=group, package=pieces.found[-1].package, chain=[recipe.path, path])
    found = [Piece("", recipe), *pieces.found]
    for piece in found:
        if not piece.package and isinstance(piece.file.data, dict) and "hydra" in piece.file.data:
            raise UserError("unknown key (Hydra would take it for its own settings and drop it)",
                            file=piece.file.shown, line=piece.file.line_of(["hydra"]), key="hydra")
    return found


def locate(pieces: list[Piece], key: str | None) -> tuple[str, int | None]:
    """The file and line a composed key path was written at: the recipe, or the piece merged
    there; the recipe without a line when neither has it (a key from an override)."""
    for piece in pieces if key else []:
        if piece.package and not key.startswith(piece.package + "."):
            continue
        line = piece.file.line_of(key[len(piece.package) + 1:] if piece.package else key)
        if line is not None:
            return piece.file.shown, line
    return pieces[0].file.shown, None


class _Pieces:
    def __init__(self, recipes_dir: Path, shown_dir: Path):
        self.recipes_dir = recipes_dir
        self.shown_dir = shown_dir  # recipes/ as the user sees it
        self.files: dict[Path, YamlFile] = {}
        self.found: list[Piece] = []

    def read(self, path: Path) -> YamlFile:
        if path not in self.files:
            shown = (self.shown_dir / path.relative_to(self.recipes_dir)).as_posix()
            piece = read(path, shown)
            if piece.data is not None and not isinstance(piece.data, dict):
                raise UserError("a piece of a defaults list must be a mapping of keys", file=shown,
                                line=piece.root.start_mark.line + 1)
            self.files[path] = piece
        return self.files[path]

    def walk(self, file: YamlFile, group: str, package: str, chain: list[Path]) -> None:
        chosen: dict[str, int] = {}
        for index, key, option in _entries(file):
            where = dict(file=file.shown, line=file.line_of(["defaults", index - 1]))
            entry_group, _, entry_package = key.partition("@")
            full = entry_group[1:] if entry_group.startswith("/") else "/".join(p for p in (group, entry_group) if p)
            label = f"{full}@{_package(package, entry_group, entry_package or None)}"
            if label in chosen:
                raise UserError(f"defaults list entry {index}: {key} appears twice (also entry {chosen[label]})",
                                **where, hint="keep one of them")
            chosen[label] = index
            if label.partition("@")[2].split(".")[0] == "hydra":
                raise UserError(f"defaults list entry {index}: {key} would merge into Hydra's own settings, "
                                "which composing drops", **where,
                                expected="a group and package of the recipe, e.g. quant@targets.int8")
            path = self.recipes_dir / full / f"{option}.yaml"
            if not _is_file(path):
                options = sorted(p.stem for p in (self.recipes_dir / full).glob("*.yaml"))
                raise UserError(f"cannot compose recipe: defaults list entry {index}: no piece "
                                f"{(self.shown_dir / full / (option + '.yaml')).as_posix()}", **where,
                                expected=f"one of: {', '.join(options)}" if options else None)
            if path in chain:
                raise UserError(f"defaults list entry {index}: {full}/{option} includes itself", **where)
            if len(self.found) >= MAX_PIECES:
                raise UserError(f"defaults list entry {index}: more than {MAX_PIECES} pieces composed", **where)
            self.found.append(Piece(_package(package, entry_group, entry_package or None), self.read(path)))
            self.walk(self.found[-1].file, group=full, package=self.found[-1].package, chain=[*chain, path])


def _package(parent: str, group: str, package: str | None) -> str:
    """Where Hydra merges a piece: its `@package`, by default its group, below the parent's."""
    if package is None:
        package = group.lstrip("/").replace("/", ".")
    if package == "_global_" or package.startswith("_global_."):
        return package.removeprefix("_global_").lstrip(".")
    return ".".join(p for p in (parent, package) if p)


def _entries(file: YamlFile) -> list[tuple[int, str, str]]:
    """(1-based index, `group@package`, option) of each entry of a file's defaults list."""
    if not isinstance(file.data, dict) or "defaults" not in file.data:
        return []
    entries = file.data["defaults"]
    if not isinstance(entries, list):
        raise UserError("the defaults list must be a list", file=file.shown, line=file.line_of(["defaults"]),
                        key="defaults", expected=f"entries {DEFAULTS_EXPECTED}")
    found, self_at = [], None
    for index, entry in enumerate(entries, 1):
        line = file.line_of(["defaults", index - 1])
        if entry == "_self_":
            if self_at is not None:
                raise UserError(f"defaults list entry {index}: _self_ appears twice (also entry {self_at})",
                                file=file.shown, line=line, hint="keep one of them")
            self_at = index
        elif _well_formed(entry):
            (key, option), = entry.items()
            found.append((index, key, option))
        else:
            got = yaml.safe_dump(entry, default_flow_style=True, width=200).strip().removesuffix("\n...")
            hint = "`_self_` stands alone: `- _self_`" if "_self_" in got else \
                "e.g. `- quant@targets.int8: int8_strict` for recipes/quant/int8_strict.yaml"
            raise UserError(f"defaults list entry {index}: expected {DEFAULTS_EXPECTED}, got {got[:80]}",
                            file=file.shown, line=line, hint=hint)
    return found


def _well_formed(entry) -> bool:
    if not isinstance(entry, dict) or len(entry) != 1:
        return False
    (key, option), = entry.items()
    return isinstance(key, str) and isinstance(option, str) and bool(ENTRY_KEY.match(key)) \
        and bool(OPTION.match(option)) and option != "_self_"


def _chosen_by_overrides(recipes_dir: Path, overrides: list[str]) -> list[tuple[str, str]]:
    """(`group@package`, option) of overrides that pick a piece: `quant@targets.int8=int8_loose`."""
    chosen = []
    for override in overrides:
        key, sep, value = override.lstrip("+").partition("=")
        group = key.split("@", 1)[0]
        if sep and ENTRY_KEY.match(key) and not group.startswith("/") and OPTION.match(value) \
                and (recipes_dir / group).is_dir():
            chosen.append((key, value))
    return chosen


def check_override(override: str, shown: str) -> None:
    """Bound what Hydra's override parser (recursive, like OmegaConf) is given, and keep
    Hydra's own settings out: Hydra would take `hydra.*` and silently drop it."""
    key = override.split("=", 1)[0].lstrip("+~")
    if re.split(r"[./@]", key, maxsplit=1)[0] == "hydra":
        raise UserError(f"bad override {override[:60]!r}: not a recipe key (Hydra's own settings)",
                        file=shown, key=key, expected="key=value for a key of the recipe")
    depth, deepest = 0, override.split("=", 1)[0].count(".") + 1
    for char in override:
        depth += (char in "[{") - (char in "]}")
        deepest = max(deepest, depth)
    if deepest > MAX_DEPTH or len(override) > MAX_BYTES:
        too = f"nesting deeper than {MAX_DEPTH} levels" if deepest > MAX_DEPTH else \
            f"longer than {MAX_BYTES // 1024} KiB"
        raise UserError(f"bad override {override[:60]!r}: {too}", file=shown,
                        key=override.split("=", 1)[0].lstrip("+~") or None,
                        expected="key=value for an existing key, +key=value to add one, ~key to delete")


# ---------------------------------------------------------------- interpolations

REFERENCE = re.compile(r"(\.*)([A-Za-z0-9_][\w-]*(?:\.[\w-]+|\[\d+\])*)")
MAX_HOPS = 4 * MAX_DEPTH  # nesting plus interpolations followed, within Python's stack


def check_interpolations(composed, pieces: list[Piece]) -> None:
    """Refuse `${...}` that would expand beyond MAX_VALUES before OmegaConf resolves them:
    `z1: "${z0}${z0}..."` nine times over is the alias bomb again, and OmegaConf resolves it for
    minutes. Counted on the unresolved composition, each referenced value once (memoized);
    any dotted name inside `${...}` that names a value counts as a reference, so resolvers
    (`${oc.select:key}`) are counted too, if anything a little high."""
    _Expansion(composed, pieces).size((), 0)


class _Expansion:
    def __init__(self, composed, pieces: list[Piece]):
        self.composed = composed
        self.pieces = pieces
        self.sizes: dict[tuple, int] = {}
        self.open: set[tuple] = set()

    def size(self, path: tuple, hops: int) -> int:
        if path in self.sizes:
            return self.sizes[path]
        if path in self.open:
            return 1  # a loop: OmegaConf names it ("Recursive interpolation detected")
        if hops > MAX_HOPS:
            raise self.refuse(path, f"interpolations nested more than {MAX_HOPS} deep")
        self.open.add(path)
        value = self.value(path)
        total = 1
        if isinstance(value, dict):
            total += sum(self.size((*path, key), hops + 1) for key in value)
        elif isinstance(value, list):
            total += sum(self.size((*path, index), hops + 1) for index in range(len(value)))
        elif isinstance(value, str) and "${" in value:
            total += sum(self.size(target, hops + 1) for target in self.references(value, path))
        self.open.discard(path)
        if total > MAX_VALUES:
            raise self.refuse(path, f"interpolations expand to more than {MAX_VALUES} values",
                              hint="`${a}` repeated in a value that is itself repeated multiplies")
        self.sizes[path] = total
        return total

    def value(self, path: tuple):
        node = self.composed
        for part in path:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
            else:
                return _MISSING
        return node

    def references(self, text: str, path: tuple) -> list[tuple]:
        found = []
        for inner in _interpolations(text):
            for dots, name in REFERENCE.findall(inner):
                base = path[:len(path) - len(dots)] if dots else ()
                if len(dots) > len(path):
                    continue
                parts = [int(p) if p.isdigit() and "[" in name else p
                         for p in re.split(r"\.|\[|\]", name) if p]
                target = (*base, *parts)
                if self.value(target) is not _MISSING and target != path:
                    found.append(target)
        return found

    def refuse(self, path: tuple, message: str, hint: str | None = None) -> UserError:
        key = ".".join(str(part) for part in path)
        file, line = locate(self.pieces, key)
        return UserError(message, file=file, line=line, key=key or None, hint=hint)


_MISSING = object()


def _interpolations(text: str) -> list[str]:
    """The inside of each top-level `${...}` of a string (nested ones stay inside it)."""
    found, depth, start, i = [], 0, 0, 0
    while i < len(text):
        if text.startswith("${", i):
            if depth == 0:
                start = i + 2
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}" and depth:
            depth -= 1
            if depth == 0:
                found.append(text[start:i])
        i += 1
    if depth:
        found.append(text[start:])
    return found
