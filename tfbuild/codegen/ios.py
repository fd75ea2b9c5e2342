"""iOS: a Swift package per target (Package.swift, loader, XCTest), one flavour per API
(templates/ios/<api>/Loader.swift.j2; the rest is shared).

`compiled_model` uses LiteRT's Swift package (`import LiteRT`, from VERSIONS["litert_swift"]);
`interpreter` uses TensorFlowLiteSwift's Interpreter, which is published as a CocoaPod only.
The package's test target carries the golden vectors and a copy of the model as resources, so
`swift test` in the package needs nothing outside it.
"""

from __future__ import annotations

from tfbuild.codegen.names import validate_class_name
from tfbuild.codegen.view import GOLDEN, MODEL, require
from tfbuild.errors import UserError

KEY = "ios"
APIS = ("compiled_model", "interpreter")
DELEGATES = ("coreml", "metal")  # TensorFlowLiteSwift delegates (api: interpreter)


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
            "coreml": "coreml" in delegates, "metal": "metal" in delegates}


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
