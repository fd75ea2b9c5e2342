"""Android: a Kotlin loader per target, one flavour per API (templates/android/<api>/)."""

from __future__ import annotations

from tfbuild.codegen.names import validate_class_name, validate_package
from tfbuild.codegen.view import GOLDEN, GOLDEN_FIXED, require
from tfbuild.errors import UserError

KEY = "android"
APIS = ("compiled_model", "interpreter")


def view(raw: dict, inputs: list[dict], outputs: list[dict]) -> dict:
    """`mobile.android` validated; the CompiledModel Kotlin API has no int16 reads or writes."""
    require(raw, ("package", "class_name", "api"), "android")
    package = validate_package(raw["package"])
    class_name = validate_class_name(raw["class_name"], "mobile.android.class_name")
    api = raw["api"]
    if api not in APIS:
        raise UserError(f"unknown Android api {api!r}", key="mobile.android.api",
                        expected=" or ".join(APIS))
    if api == "compiled_model":
        for t in inputs + outputs:
            if t["litert"] is None:
                raise UserError(f"tensor {t['name']!r} has dtype {t['dtype']}, which the LiteRT "
                                f"CompiledModel Kotlin API cannot read or write",
                                key="mobile.android.api", expected="interpreter",
                                hint="set mobile.android.api: interpreter")
    return {"package": package, "package_path": package.replace(".", "/"),
            "class_name": class_name, "api": api}


def files(view: dict) -> list[tuple[str, str]]:
    """(source, path under the target dir) per generated file; source is a template or GOLDEN."""
    android = view["android"]
    package_path, name = android["package_path"], android["class_name"]
    plan = [(f"android/{android['api']}/Loader.kt.j2",
             f"android/src/main/kotlin/{package_path}/{name}.kt")]
    if view["has_golden"]:
        plan += [("android/LoaderTest.kt.j2",
                  f"android/src/androidTest/kotlin/{package_path}/{name}Test.kt"),
                 (golden_source(view), f"android/src/androidTest/assets/{view['golden_file']}")]
    plan.append(("android/README.md.j2", "android/README.md"))
    return plan


def golden_source(view: dict) -> str:
    """LiteRT's Kotlin CompiledModel API cannot resize an input, so that loader keeps the
    converted shape, and its test replays golden vectors computed at that shape."""
    return GOLDEN_FIXED if view["android"]["api"] == "compiled_model" and view["dynamic"] else GOLDEN
