"""iOS: a Swift package per target (Package.swift, loader, XCTest), one flavour per API
(templates/ios/<api>/Loader.swift.j2; the rest is shared).

`compiled_model` uses LiteRT's Swift package (`import LiteRT`), pinned to a commit (by default
VERSIONS["litert_swift_revision"], the v2.2.0 tag's) or taken from a local checkout;
`interpreter` uses TensorFlowLiteSwift's Interpreter, which is published as a CocoaPod only.
The package's test target carries the golden vectors and a copy of the model as resources, so
`swift test` in the package needs nothing outside it.
"""

from __future__ import annotations

import re

from tfbuild.codegen.names import validate_class_name
from tfbuild.codegen.versions import VERSIONS
from tfbuild.codegen.view import GOLDEN, MODEL, require
from tfbuild.errors import UserError

KEY = "ios"
APIS = ("compiled_model", "interpreter")
DELEGATES = ("coreml", "metal")  # TensorFlowLiteSwift delegates (api: interpreter)
LITERT_URL = "https://github.com/google-ai-edge/LiteRT"
REVISION = re.compile(r"^[0-9a-f]{40}$")


def view(raw: dict, inputs: list[dict], outputs: list[dict]) -> dict:
    """`mobile.ios` validated. Every dtype the loaders support works with both APIs: LiteRT's
    Swift TensorBuffer reads and writes any element type, TensorFlowLiteSwift copies bytes."""
    require(raw, ("class_name", "api"), "ios")
    class_name = validate_class_name(raw["class_name"], "mobile.ios.class_name")
    api = raw["api"]
    if api not in APIS:
        raise UserError(f"unknown iOS api {api!r}", key="mobile.ios.api", expected=" or ".join(APIS))
    delegates = check_delegates(list(raw.get("delegates") or []), api)
    return {"class_name": class_name, "api": api,
            "coreml": "coreml" in delegates, "metal": "metal" in delegates,
            "litert": litert_source(raw.get("litert"), api)}


def litert_source(raw: dict | None, api: str) -> dict | None:
    """Where the generated Package.swift takes LiteRT from: {url, revision, package} or
    {path, package}, `package` being the identity SwiftPM gives it (the URL's or folder's last
    component), which `.product(name: "LiteRT", package: ...)` must name. Never a version
    requirement: LiteRT's manifest declares unsafe linker flags, which SwiftPM refuses from a
    dependency resolved by version and accepts from one pinned to a commit or a local path.
    None for api: interpreter, which has no Swift package to depend on."""
    check_litert(raw, api)
    if api != "compiled_model":
        return None
    raw = {k: v for k, v in (raw or {}).items() if v is not None}
    source = ({"path": raw["path"], "url": None, "revision": None} if "path" in raw else
              {"path": None, "url": raw.get("url") or LITERT_URL,
               "revision": raw.get("revision") or VERSIONS["litert_swift_revision"]})
    location = (source.get("path") or source["url"]).rstrip("/")
    identity = re.sub(r"\.git$", "", location.rsplit("/", 1)[-1]) or "LiteRT"
    return {**source, "package": identity}


def check_litert(raw: dict | None, api: str) -> None:
    """`mobile.ios.litert` is {url, revision} (url optional) or {path}, for api: compiled_model."""
    raw = {k: v for k, v in (raw or {}).items() if v is not None}
    if not raw:
        return
    if api != "compiled_model":
        raise UserError("mobile.ios.litert chooses LiteRT's Swift package, which api: interpreter does not use",
                        key="mobile.ios.litert", expected="no litert setting, or mobile.ios.api: compiled_model")
    check_litert_source(raw)


def check_litert_source(raw: dict) -> None:
    raw = {k: v for k, v in raw.items() if v is not None}
    if "path" in raw and ("url" in raw or "revision" in raw):
        raise UserError("mobile.ios.litert takes a path or a url and revision, not both", key="mobile.ios.litert",
                        expected="{path: <local LiteRT checkout>} or {url: <git url>, revision: <commit>}")
    if "path" not in raw and not REVISION.match(str(raw.get("revision", ""))):
        raise UserError(f"mobile.ios.litert.revision must be a full commit hash, got {raw.get('revision')!r}",
                        key="mobile.ios.litert.revision",
                        expected=f"40 lowercase hex digits, such as v{VERSIONS['litert_swift']}'s "
                                 f"{VERSIONS['litert_swift_revision']} (git rev-parse <tag>^{{commit}}); "
                                 "SwiftPM refuses LiteRT by version because of its unsafe linker flags")


def check_delegates(delegates: list[str], api: str) -> list[str]:
    """Delegates are TensorFlowLiteSwift objects; a CompiledModel takes accelerators instead,
    chosen by the app at run time, so a delegate there would be silently ignored."""
    unknown = [d for d in delegates if d not in DELEGATES]
    if unknown:
        raise UserError(f"unknown iOS delegates {unknown}", key="mobile.ios.delegates",
                        expected=f"a subset of {list(DELEGATES)}")
    if delegates and api != "interpreter":
        raise UserError(f"iOS delegates {delegates} belong to api: interpreter (TensorFlowLiteSwift)",
                        key="mobile.ios.delegates",
                        expected="mobile.ios.api: interpreter, or no delegates (api: compiled_model "
                                 "takes accelerators such as [.gpu, .cpu] at run time)",
                        hint="drop mobile.ios.delegates and pass accelerators: [.gpu, .cpu] to the "
                             "loader, or set mobile.ios.api: interpreter")
    return delegates


def files(view: dict) -> list[tuple[str, str]]:
    """(source, path under the target dir) per generated file; source is a template, GOLDEN or
    MODEL (the built .tflite, copied as a test resource)."""
    ios = view["ios"]
    name = ios["class_name"]
    tests = f"ios/Tests/{name}Tests"
    plan = [("ios/Package.swift.j2", "ios/Package.swift"),
            (f"ios/{ios['api']}/Loader.swift.j2", f"ios/Sources/{name}/{name}.swift")]
    if view["has_golden"]:
        plan += [("ios/LoaderTests.swift.j2", f"{tests}/{name}Tests.swift"),
                 (GOLDEN, f"{tests}/{view['golden_file']}"),
                 (MODEL, f"{tests}/{view['model_file']}")]
    plan.append(("ios/README.md.j2", "ios/README.md"))
    return plan
