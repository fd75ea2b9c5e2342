"""Generate Android (Kotlin) and iOS (Swift) loaders from a converted model's real signature.

One module per concern, so that adding a platform flavour is adding a file and its templates:

- `names`: identifiers, string literals, comments and the user's validated names; nothing from a
  model or a recipe reaches generated code except through these helpers (also jinja2 filters).
- `view`: the shared tensor view (dtypes, shapes, quantization) and the golden vectors.
- `android`, `ios`: each platform's settings (`view`) and the files it generates (`files`).
- `versions`: the library versions the generated build files name.

`render_loaders` is pure (returns text, writes nothing); `model_copies` says where the built model
file is copied besides (the iOS test resources); `template_files` lists every template they may
read so the build can hash them into its cache key.
"""

from __future__ import annotations

import functools

from pathlib import Path

from tfbuild.codegen import android, ios
from tfbuild.codegen.names import (
    FILTERS, JAVA_KEYWORDS, KOTLIN_HARD_KEYWORDS, RESERVED_CAMEL, RESERVED_TYPES, SWIFT_KEYWORDS,
    camel, comment_text, float_literal, identifier_words, int_list, kotlin_float, kotlin_string,
    markdown_code, pascal, safe_filename, screaming, swift_string, unique_words,
    validate_class_name, validate_package, words)
from tfbuild.codegen.versions import VERSIONS
from tfbuild.codegen.view import (CTX_KEYS, DTYPES, GOLDEN, GOLDEN_FIXED, MODEL, golden_json, metadata_view,
                                  require, tensors)
from tfbuild.errors import UserError

# The public surface: rendering, plus the helpers recipes, tests and templates rely on.
__all__ = [
    "render_loaders", "model_copies", "build_view", "template_files", "builtin_template_dir",
    "golden_json", "VERSIONS", "DTYPES", "FILTERS", "PLATFORMS", "ANDROID_APIS", "IOS_APIS",
    "IOS_DELEGATES", "JAVA_KEYWORDS", "KOTLIN_HARD_KEYWORDS", "RESERVED_CAMEL", "RESERVED_TYPES",
    "SWIFT_KEYWORDS", "camel", "comment_text", "float_literal", "identifier_words", "int_list",
    "kotlin_float", "kotlin_string", "markdown_code", "pascal", "safe_filename", "screaming",
    "swift_string", "unique_words", "validate_class_name", "validate_package", "words",
]

PLATFORMS = (android, ios)
ANDROID_APIS = android.APIS
IOS_APIS = ios.APIS
IOS_DELEGATES = ios.DELEGATES
# Built-in templates that were renamed: an override under the old name would silently stop
# applying, so it is refused with the new names.
RENAMED_TEMPLATES = {
    "ios/Loader.swift.j2": "ios/compiled_model/Loader.swift.j2 or ios/interpreter/Loader.swift.j2",
}


def build_view(ctx: dict) -> dict:
    """The template context: ctx validated, with every derived name computed exactly once."""
    require(ctx, CTX_KEYS, "codegen ctx")
    inputs, outputs = tensors(ctx)
    labels = ctx["labels"]
    if labels is not None and not isinstance(labels, list):
        raise ValueError("ctx labels must be a list or None")
    both = inputs + outputs
    view = {
        "recipe": str(ctx["recipe"]), "target": str(ctx["target"]),
        "model_file": str(ctx["model_file"]), "model_sha256": str(ctx["model_sha256"]),
        "tfbuild_version": str(ctx["tfbuild_version"]),
        "signature_key": str(ctx["signature_key"]),
        "inputs": inputs, "outputs": outputs, "tensors": both,
        "uses_flex": bool(ctx["uses_flex"]),
        "labels": None if labels is None else [str(x) for x in labels],
        "quantized": any(t["quantized"] for t in both),
        "dynamic": any(t["dynamic"] for t in inputs),
        "dtypes": sorted({t["dtype"] for t in both}),
        "has_golden": ctx["golden"] is not None,
        "golden_file": f"{safe_filename(ctx['recipe'])}_{safe_filename(ctx['target'])}_golden.json",
        "versions": dict(VERSIONS),
        "metadata": metadata_view(ctx.get("metadata"), inputs, outputs),  # optional in ctx
    }
    for platform in PLATFORMS:
        raw = ctx[platform.KEY]
        view[platform.KEY] = None if raw is None else platform.view(raw, inputs, outputs)
    return view


# ---------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------

def builtin_template_dir() -> Path:
    """The shipped templates: package data `tfbuild.templates` when installed, else the repo's
    top-level templates/ next to the tfbuild/ package (a source checkout)."""
    import importlib.resources

    try:
        root = importlib.resources.files("tfbuild.templates")
    except ModuleNotFoundError:
        root = None
    if isinstance(root, Path) and root.is_dir():
        return root
    return Path(__file__).resolve().parents[2] / "templates"


def _search_path(template_dirs: list[Path] | None) -> list[Path]:
    return [Path(d) for d in (template_dirs or [])] + [builtin_template_dir()]


def template_files(template_dirs: list[Path] | None = None) -> list[Path]:
    """Every template file render_loaders may read, override dirs first, then built-ins.

    Only `*.j2` files are templates; listing is sorted so the build's hash is stable.
    """
    files: list[Path] = []
    for directory in _search_path(template_dirs):
        if directory.is_dir():
            files.extend(sorted(p for p in directory.rglob("*.j2") if p.is_file()))
    return files


def _check_overrides(template_dirs: list[Path] | None) -> None:
    for directory in template_dirs or []:
        for old, new in RENAMED_TEMPLATES.items():
            if (Path(directory) / old).is_file():
                raise UserError(f"template override {old} no longer replaces anything: the "
                                f"built-in template was renamed", key="mobile.templates",
                                expected=f"{new} (see docs/mobile.md, Overriding templates)")


def _environment(template_dirs: list[Path] | None):
    """Overrides win because FileSystemLoader searches its directories in order. One
    environment per search path and process, so that every target's loaders reuse the compiled
    templates (jinja2 still notices an edited template by its mtime)."""
    return _environment_for(tuple(str(d) for d in _search_path(template_dirs)))


# What the compiled code of a template depends on besides its source (see _bytecode_cache).
SYNTAX = {"keep_trailing_newline": True, "autoescape": False, "trim_blocks": True, "lstrip_blocks": True}


@functools.lru_cache(maxsize=8)
def _environment_for(search_path: tuple[str, ...]):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(list(search_path)), undefined=jinja2.StrictUndefined,
        bytecode_cache=_bytecode_cache(), **SYNTAX)
    env.filters.update(FILTERS)
    return env


def _bytecode_cache():
    """Compiled templates kept between runs, as Python keeps .pyc files: compiling the ten
    templates a build renders took longer than rendering every target's loaders with them, and
    a fresh clone pulling from the shared cache paid it each time. jinja2's own per-user folder
    (mode 0700, in the temp dir) holds them, each checked against its template's source digest;
    the file names carry the jinja2 version and the syntax options the code was compiled with.
    None (compile every run) where that folder is missing or not safe to use."""
    import jinja2

    from tfbuild.fingerprint import sha256_json

    class QuietCache(jinja2.FileSystemBytecodeCache):
        def dump_bytecode(self, bucket) -> None:  # a full or read-only disk only costs the next compile
            try:
                super().dump_bytecode(bucket)
            except OSError:
                pass

    tag = sha256_json([jinja2.__version__, SYNTAX])[:12]
    try:
        return QuietCache(pattern=f"__tfbuild_{tag}_%s.cache")
    except (OSError, RuntimeError):  # RuntimeError: jinja2 found no folder only this user can write
        return None


def _plan(view: dict) -> list[tuple[str, str]]:
    """(source, output path) for every generated file of every configured platform."""
    return [entry for platform in PLATFORMS if view[platform.KEY]
            for entry in platform.files(view)]


def render_loaders(ctx: dict, template_dirs: list[Path] | None = None) -> dict[str, str]:
    """Return {relative_path: file_text} for every generated file. Pure: writes nothing."""
    _check_overrides(template_dirs)
    view = build_view(ctx)
    env = _environment(template_dirs)
    plan = _plan(view)
    goldens = {}  # each text made once, however many platforms ship it
    for source in {source for source, _ in plan if source in (GOLDEN, GOLDEN_FIXED)}:
        vectors = ctx["golden"] if source == GOLDEN else (ctx.get("golden_fixed") or ctx["golden"])
        goldens[source] = golden_json({**ctx, "golden": vectors}, view["inputs"], view["outputs"])
    files = {}
    for source, path in plan:
        if source in goldens:
            files[path] = goldens[source]
        elif source != MODEL:
            files[path] = env.get_template(source).render(**view)
    return files


def model_copies(ctx: dict) -> list[str]:
    """Paths, relative to the target's directory, where the built model file must be copied
    (it is a resource of the iOS package's test target). Pure, like render_loaders."""
    return [path for source, path in _plan(build_view(ctx)) if source == MODEL]
