"""Names and literals for generated code: nothing from a model or a recipe reaches it raw.

Tensor names, labels and recipe names are arbitrary strings, so nothing derived from them reaches
the generated code without passing through one of the helpers below: identifiers are rebuilt from
ASCII words (never copied), string literals are escaped for their language, comments are
neutralised. The same helpers are registered as jinja2 filters (`FILTERS`) so project template
overrides get the same guarantees. The user's own names (Android package, class names) are
validated instead of repaired.
"""

from __future__ import annotations

import math
import re
import unicodedata

from tfbuild.errors import UserError

KOTLIN_HARD_KEYWORDS = frozenset(
    "as break class continue do else false for fun if in interface is null object package return "
    "super this throw true try typealias typeof val var when while".split())
# Java keywords are legal in Kotlin, but @JvmField properties so named are unusable from Java,
# and an Android namespace cannot contain them.
JAVA_KEYWORDS = frozenset(
    "abstract assert boolean break byte case catch char class const continue default do double "
    "else enum extends final finally float for goto if implements import instanceof int interface "
    "long native new package private protected public return short static strictfp super switch "
    "synchronized this throw throws transient try void volatile while true false null var record "
    "yield sealed permits".split())
# Swift's reserved words (declarations, statements, expressions and types), plus Type/Protocol,
# which cannot be member names, and some/any/async, which change how a declaration parses.
SWIFT_KEYWORDS = frozenset(
    "associatedtype class deinit enum extension fileprivate func import init inout internal let "
    "open operator private precedencegroup protocol public rethrows static struct subscript "
    "typealias var break case catch continue default defer do else fallthrough for guard if in "
    "repeat return throw switch where while Any as await false is nil self Self super throws true "
    "try Type Protocol some any async".split())
# Standard functions the generated bodies call unqualified while the inputs are parameters.
CALLED_UNQUALIFIED = frozenset({"check", "require"})
RESERVED_CAMEL = KOTLIN_HARD_KEYWORDS | JAVA_KEYWORDS | SWIFT_KEYWORDS | CALLED_UNQUALIFIED

# Type names the templates use unqualified: a user class with one of these names would shadow it.
RESERVED_TYPES = frozenset(
    "Outputs FloatOutputs Support LoaderError Accelerator Companion AutoCloseable Context "
    "CompiledModel TensorBuffer Interpreter Delegate ByteBuffer ByteOrder FloatArray ByteArray "
    "ShortArray IntArray LongArray BooleanArray DoubleArray Float Int Long Short Byte Boolean "
    "Double String List Map Pair Math Any Unit Array Nothing JSONObject JSONArray Test RunWith "
    "AndroidJUnit4 InstrumentationRegistry Assert Synchronized JvmField JvmStatic JvmOverloads "
    "Exception IllegalArgumentException IllegalStateException Data Bundle SignatureRunner Tensor "
    "CoreMLDelegate MetalDelegate Foundation TensorFlowLite XCTest XCTestCase Int8 UInt8 Int16 "
    "Int32 Int64 Bool Error NSString NSNumber JSONSerialization Self Never Optional Swift "
    "MemoryLayout Kotlin Java LiteRT Environment Options Set LiteRtError PackageDescription "
    "Package".split())

_PACKAGE_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


# ---------------------------------------------------------------------------------------------
# Identifiers: rebuilt from ASCII words, so no input character survives unless it is [A-Za-z0-9].
# ---------------------------------------------------------------------------------------------

def words(text: str) -> list[str]:
    """Split any string into lower-case ASCII words ("serving_default_imageData:0" -> serving,
    default, image, data, 0).

    Accents are folded first so "café" still yields a readable "cafe" instead of vanishing.
    """
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    return [w.lower() for w in _WORD.findall(folded)]


def camel(parts: list[str] | str) -> str:
    """lowerCamelCase from words; never contains '_' so it cannot meet a SCREAMING constant."""
    ws = words(parts) if isinstance(parts, str) else list(parts)
    return ws[0] + "".join(w.capitalize() for w in ws[1:]) if ws else ""


def pascal(parts: list[str] | str) -> str:
    """PascalCase from words, used as a suffix (quantize<Pascal>)."""
    ws = words(parts) if isinstance(parts, str) else list(parts)
    return "".join(w.capitalize() for w in ws)


def screaming(parts: list[str] | str) -> str:
    """SCREAMING_SNAKE_CASE from words, for Kotlin constants."""
    ws = words(parts) if isinstance(parts, str) else list(parts)
    return "_".join(w.upper() for w in ws)


def identifier_words(text: str, role: str) -> list[str]:
    """Words for a valid, keyword-free identifier in both languages.

    An empty name becomes the role ("input"/"output"); a leading digit gets the role as prefix;
    a keyword ("class", "self") gets a "value" suffix.
    """
    ws = words(text)
    if not ws:
        ws = [role]
    elif ws[0][0].isdigit():
        ws = [role, *ws]
    if camel(ws) in RESERVED_CAMEL:
        ws = [*ws, "value"]
    return ws


def unique_words(names: list[str], role_of: list[str]) -> list[list[str]]:
    """Identifier words for each name, de-duplicated with numeric suffixes.

    Collisions are judged on the case- and separator-free spelling, so two results can never
    share a camelCase, PascalCase or SCREAMING_SNAKE form.
    """
    seen: set[str] = set()
    result = []
    for name, role in zip(names, role_of):
        base = identifier_words(name, role)
        candidate, n = base, 1
        while "".join(candidate) in seen:
            n += 1
            candidate = [*base, str(n)]
        seen.add("".join(candidate))
        result.append(candidate)
    return result


# ---------------------------------------------------------------------------------------------
# Literals and comments
# ---------------------------------------------------------------------------------------------

_KOTLIN_ESCAPES = {"\\": "\\\\", '"': '\\"', "$": "\\$", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                   "\b": "\\b"}
_SWIFT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


def kotlin_string(value: object) -> str:
    """A quoted Kotlin string literal, pure ASCII: `$` cannot start a template, astral characters
    become UTF-16 surrogate escapes (Kotlin only has \\uXXXX)."""
    out = []
    for ch in str(value):
        if ch in _KOTLIN_ESCAPES:
            out.append(_KOTLIN_ESCAPES[ch])
        elif 0x20 <= ord(ch) < 0x7F:
            out.append(ch)
        else:
            units = ch.encode("utf-16-be", "surrogatepass")
            out.extend(f"\\u{units[i]:02X}{units[i + 1]:02X}" for i in range(0, len(units), 2))
    return '"' + "".join(out) + '"'


def swift_string(value: object) -> str:
    """A quoted Swift string literal, pure ASCII: escaping the backslash defuses `\\(`
    interpolation; lone surrogates (not Unicode scalars, so not expressible) become U+FFFD."""
    out = []
    for ch in str(value):
        code = ord(ch)
        if ch in _SWIFT_ESCAPES:
            out.append(_SWIFT_ESCAPES[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\u{{{0xFFFD if 0xD800 <= code <= 0xDFFF else code:X}}}")
    return '"' + "".join(out) + '"'


def comment_text(value: object) -> str:
    """Text safe inside any // or /* */ comment of Kotlin or Swift (both nest block comments):
    one line, printable ASCII (others as U+XXXX), no comment delimiters."""
    out = []
    for ch in str(value):
        code = ord(ch)
        if 0x20 <= code < 0x7F:
            out.append(ch)
        elif ch in "\t\n\r":
            out.append(" ")
        else:
            out.append(f"U+{code:04X}")
    text = "".join(out)
    while "/*" in text or "*/" in text:
        text = text.replace("/*", "/ *").replace("*/", "* /")
    return text


def markdown_code(value: object) -> str:
    """An inline Markdown code span that cannot break out of itself or the line."""
    text = comment_text(value).replace("`", "'")
    return f"`{text}`"


def float_literal(value: float) -> str:
    """The exact repr of a finite float, valid as a Swift literal and (with an `f`) a Kotlin one.

    Python's repr is the shortest round-tripping form, so parsing the literal back gives the same
    double, and the compilers round it to the same float32 the model stores.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return repr(float(value))


def kotlin_float(value: float) -> str:
    """A Kotlin Float literal with the exact repr digits, e.g. 0.0039215f or 1e-05f."""
    return float_literal(value) + "f"


def int_list(values: list[int]) -> str:
    """Comma-separated integers; ints only, so nothing from a string can slip through."""
    return ", ".join(str(int(v)) for v in values)


def safe_filename(value: object) -> str:
    """A file-name component: [A-Za-z0-9._-] only, never empty, never a dot-file."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).lstrip(".")
    return text or "model"


FILTERS = {
    "camel": camel, "pascal": pascal, "screaming": screaming,
    "kotlin_string": kotlin_string, "swift_string": swift_string,
    "comment": comment_text, "md_code": markdown_code,
    "kotlin_float": kotlin_float, "swift_float": float_literal,
    "int_list": int_list, "safe_filename": safe_filename,
}


# ---------------------------------------------------------------------------------------------
# Validation of the user's names
# ---------------------------------------------------------------------------------------------

def validate_package(package: object) -> str:
    """A Java/Kotlin package usable as an Android namespace: dotted identifiers, no keywords."""
    expected = "dotted identifiers such as com.example.digits (ASCII letters, digits, _; no keywords)"
    if not isinstance(package, str) or not package:
        raise UserError("missing Android package", key="mobile.android.package", expected=expected)
    for segment in package.split("."):
        if not _PACKAGE_SEGMENT.match(segment) or segment in KOTLIN_HARD_KEYWORDS | JAVA_KEYWORDS:
            raise UserError(f"invalid Android package {package!r} (segment {segment!r})",
                            key="mobile.android.package", expected=expected)
    return package


def validate_class_name(name: object, key: str) -> str:
    """A class name that is a type name in both languages and shadows nothing the code uses."""
    expected = "a PascalCase identifier such as DigitsClassifier (ASCII letters, digits, _)"
    if not isinstance(name, str) or not _CLASS_NAME.match(name):
        raise UserError(f"invalid class name {name!r}", key=key, expected=expected)
    if name in RESERVED_TYPES or name in RESERVED_CAMEL:
        raise UserError(f"class name {name!r} clashes with a name the generated code uses",
                        key=key, expected=expected, hint=f"e.g. {name}Model")
    return name
