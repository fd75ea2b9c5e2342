"""A tfbuild project: a folder with `recipes/`, its state under `.tfbuild/` and `tfbuild.lock`.

Composing recipes through Hydra costs more than the whole rest of a no-op build, so composed
recipes are cached by the digests of every YAML file under `recipes/` plus the overrides. Each
cached recipe carries its own digest: a damaged cache entry is composed again, never validated
as if it were the user's recipe.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tfbuild import __version__
from tfbuild import recipe as recipe_mod
from tfbuild.errors import UserError
from tfbuild.fingerprint import DigestCache, sha256_json
from tfbuild.jsonfile import read_cache

STATE_DIR = ".tfbuild"
LOCK_FILE = "tfbuild.lock"
PROJECT_FILE = "tfbuild.yaml"  # settings of the project, not of a recipe: cache, executors
COMPOSE_CACHE_LIMIT = 256
COMPOSE_CACHE_VERSION = 4  # bump when compose() changes what it returns or refuses


@dataclass(frozen=True)
class LoadedRecipe:
    name: str
    file: str  # as shown to the user, relative to the project root
    raw: dict
    recipe: recipe_mod.Recipe

    def output_dir(self, root: Path) -> Path:
        return root / (self.recipe.output_dir or f"build/{self.name}")


@dataclass
class Project:
    root: Path
    digests: DigestCache = field(repr=False)
    read_only: bool = False  # dry runs and queries leave the disk as they found it

    @classmethod
    def open(cls, directory: Path, read_only: bool = False) -> "Project":
        root = Path(directory).resolve()
        if not root.is_dir():
            raise UserError("no such directory", file=str(directory), expected="-C DIR naming a project folder")
        if not (root / "recipes").is_dir():
            raise UserError("not a tfbuild project: no recipes/ folder", file=str(root),
                            hint="run tfbuild at the folder that holds recipes/, or pass -C DIR")
        if (root / STATE_DIR).exists() and not (root / STATE_DIR).is_dir():
            raise UserError(f"{STATE_DIR} is not a directory", file=str(root / STATE_DIR),
                            hint="tfbuild keeps its state there: move that file away")
        digests = DigestCache(None if read_only else root / STATE_DIR / "digests.json",
                              load_from=root / STATE_DIR / "digests.json")
        return cls(root=root, digests=digests, read_only=read_only)

    @property
    def recipes_dir(self) -> Path:
        return self.root / "recipes"

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE

    def rel(self, path: Path) -> str:
        path = Path(path)
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def recipe_names(self) -> list[str]:
        return recipe_mod.recipe_names(self.recipes_dir)

    def load(self, name: str, overrides: list[str]) -> LoadedRecipe:
        path = recipe_mod.recipe_file(self.recipes_dir, name)
        shown = self.rel(path)
        raw = self._composed(name, overrides, shown)
        try:
            recipe = recipe_mod.validate(raw, shown)
        except UserError as err:
            if _blame_override(err, overrides):  # the file's line holds the value it replaced
                raise err from None
            raise recipe_mod.located(err, self.recipes_dir, name, overrides) from None
        return LoadedRecipe(name=name, file=shown, raw=raw, recipe=recipe)

    @functools.cached_property
    def _recipes_fingerprint(self) -> list:
        """Every YAML file a composition may read, with its digest (once per run, not per recipe)."""
        yaml_files = sorted(p for p in self.recipes_dir.rglob("*") if p.suffix in (".yaml", ".yml"))
        return [COMPOSE_CACHE_VERSION, __version__, _hydra_version(),
                [[self.rel(p), self.digests.file(p)] for p in yaml_files]]

    def private_dir(self, *parts: str, empty: bool = False) -> Path:
        """A folder under .tfbuild/ for tfbuild to write into (emptied first if `empty`). What is
        in its way (a file where a folder belongs) is tfbuild's own debris and is removed: a
        damaged private folder is rebuilt, never a reason for a worker to crash."""
        path = self.state_dir.joinpath(*parts)
        for depth in range(1, len(parts) + 1):
            step = self.state_dir.joinpath(*parts[:depth])
            if (step.exists() and not step.is_dir()) or (empty and step == path):
                _remove(step)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @functools.cached_property
    def _compose_cache(self) -> dict:
        return read_cache(self.state_dir / "compose-cache.json")

    def _composed(self, name: str, overrides: list[str], shown: str) -> dict:
        cache_key = sha256_json([*self._recipes_fingerprint, name, overrides])
        cache = self._compose_cache
        cached = cache.get(cache_key)
        if isinstance(cached, dict) and isinstance(cached.get("raw"), dict) \
                and cached.get("sha256") == sha256_json(cached["raw"]):
            return cached["raw"]
        raw = recipe_mod.compose(self.recipes_dir, name, overrides, shown)
        if not self.read_only:
            cache.pop(cache_key, None)  # re-inserted last: the newest entry is evicted last
            cache[cache_key] = {"sha256": sha256_json(raw), "raw": raw}
            while len(cache) > COMPOSE_CACHE_LIMIT:
                cache.pop(next(iter(cache)))
            write_json_atomic(self.state_dir / "compose-cache.json", cache)
        return raw

    def select(self, patterns: list[str], overrides: list[str]) -> list[tuple[LoadedRecipe, list[str]]]:
        """Recipes and their target names matching `recipe`, `recipe:target` or globs of either."""
        names = self.recipe_names()
        misnamed = sorted(self.recipes_dir.glob("*.yml"))
        if misnamed:
            raise UserError("recipes must end in .yaml", file=self.rel(misnamed[0]),
                            expected=f"rename it to {misnamed[0].stem}.yaml")
        if not names:
            raise UserError("no recipes found", file=self.rel(self.recipes_dir),
                            expected="one YAML file per model, e.g. recipes/digits.yaml")
        wanted: dict[str, set[str] | None] = {}
        for pattern in patterns or ["*"]:
            recipe_glob, _, target_glob = pattern.partition(":")
            matched = fnmatch.filter(names, recipe_glob)
            if not matched:
                raise UserError(f"no recipe matches {pattern!r}",
                                expected=f"one of: {', '.join(names)}")
            for name in matched:
                if not target_glob:
                    wanted[name] = None
                elif wanted.get(name, set()) is not None:
                    wanted.setdefault(name, set()).add(target_glob)
        selected = []
        for name, target_globs in wanted.items():
            loaded = self.load(name, overrides)
            targets = list(loaded.recipe.targets)
            if target_globs is not None:
                targets = [t for t in targets if any(fnmatch.fnmatchcase(t, g) for g in target_globs)]
                if not targets:
                    raise UserError(f"no target of recipe {name!r} matches {sorted(target_globs)}",
                                    file=loaded.file, key="targets",
                                    expected=f"one of: {', '.join(loaded.recipe.targets)}")
            selected.append((loaded, targets))
        if not any(targets for _, targets in selected):
            raise UserError(f"no target matches {' '.join(patterns)}")
        return selected


def _hydra_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hydra-core")
    except PackageNotFoundError:
        return "unknown"


def _blame_override(err: UserError, overrides: list[str]) -> bool:
    """A bad value that came from the command line is the override's fault, not the file's:
    said in the message. Whether an override was to blame."""
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if err.key and (err.key == key or err.key.startswith(key + ".") or key.startswith(err.key + ".")):
            err.message = f"bad override {override!r}: {err.message}"
            return True
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_json_atomic(path: Path, value, *, indent: int | None = None) -> None:
    """Write beside the destination and rename in, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = json.dumps(value, indent=indent, sort_keys=indent is not None)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text + ("\n" if indent is not None else ""))
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a folder where the file belongs: the user's to fix
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UserError(f"cannot write it: {err.strerror}", file=str(path)) from None


def project_settings(root: Path, section: str) -> tuple[dict, str]:
    """One section of the project file (`tfbuild.yaml` at the root; {} when the file or the
    section is absent) and the file's name for error messages. Callers validate the section."""
    path = root / PROJECT_FILE
    if not path.is_file():
        return {}, PROJECT_FILE
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"cannot read the project file: {err}", file=PROJECT_FILE) from None
    if not isinstance(data, dict):
        raise UserError("the project file must be a mapping of sections", file=PROJECT_FILE,
                        expected="cache: {...} and/or ray: {...}")
    value = data.get(section, {})
    if not isinstance(value, dict):
        raise UserError(f"the {section} section must be a mapping", file=PROJECT_FILE, key=section)
    return value, PROJECT_FILE
