"""One exception type for mistakes a user can fix, and one for a target that cannot be built.

Everything raised as `UserError` is printed as one clear message (file, line when it is known,
key path, what was expected) with exit code 2. `ConversionFailed` fails one target (exit 1, the
others go on under -k) with a message that says what to change. Anything else that escapes is a
bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re


class UserError(Exception):
    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 expected: str | None = None, hint: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line  # 1-based line in `file`, for mistakes in a YAML text
        self.key = key
        self.expected = expected
        self.hint = hint

    def render(self) -> str:
        line = f"line {self.line}" if self.line else None
        where = ": ".join(part for part in (self.file, line, self.key) if part)
        lines = [f"error: {where}: {self.message}" if where else f"error: {self.message}"]
        if self.expected:
            lines.append(f"  expected: {self.expected}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"message": self.message, "file": self.file, "key": self.key,
                "expected": self.expected, "hint": self.hint, "line": self.line}

    @classmethod
    def from_dict(cls, data: dict) -> "UserError":
        return cls(data["message"], file=data.get("file"), key=data.get("key"),
                   expected=data.get("expected"), hint=data.get("hint"), line=data.get("line"))


class ConversionFailed(Exception):
    """A target could not be converted or run; the message says what to change."""


# Faults of the machine, not of a model or a recipe: what each means, and what to do about it.
MACHINE_FAULTS = {
    errno.ENOSPC: ("no space left on the device", "free space on it"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space or raise the quota"),
    errno.EROFS: ("the file system is read-only", "make it writable, or set output_dir to a writable folder"),
    errno.EACCES: ("permission denied", "give this user write access to it"),
    errno.EPERM: ("operation not permitted", "give this user write access to it"),
    errno.ENAMETOOLONG: ("a file name is longer than the file system allows", "use shorter names"),
}


def machine_fault(err: BaseException, root: str | os.PathLike | None = None,
                  folder: str | os.PathLike | None = None) -> str | None:
    """`cannot write <folder>: no space left on the device; free space on it and run tfbuild
    again (nothing was lost)` for an OSError the machine caused, else None (a bug or a model's
    fault). `folder`: where the caller was writing, for errors that name no file (a write that
    fills the disk); `root` shortens it to a path in the project."""
    if not isinstance(err, OSError) or err.errno not in MACHINE_FAULTS:
        return None
    what, fix = MACHINE_FAULTS[err.errno]
    where = err.filename if isinstance(err.filename, (str, bytes, os.PathLike)) else None
    folder = os.path.dirname(os.fsdecode(where)) if where else (os.fsdecode(folder) if folder else None)
    if folder and root is not None:
        relative = os.path.relpath(folder, root)
        folder = folder if relative.startswith("..") else relative
    place = f"cannot write {folder}" if folder else "cannot write the build's files"
    return (f"{place}: {what}; {fix} and run tfbuild again (finished targets and the last good "
            "outputs are kept)")


def describe_exception(err: BaseException) -> str:
    """`Type: the first line that says something`, whole, never cut mid-word. Skips Keras'
    `Exception encountered when calling X.call().` preamble (kept as `in X.call()`), its
    `Error when deserializing class X using config=...` preamble (whose `Exception encountered:`
    line is the cause) and autograph's `in user code:` stack, whose last `SomeError: ...` line is
    the real cause."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # Keras bolds names with terminal escapes
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    kind = type(err).__name__
    if lines and lines[0] == "in user code:":
        causes = [re.match(r"^(\w+(?:Error|Exception)): (.*)$", line) for line in lines[1:]]
        found = [match for match in causes if match]
        if found:
            kind, rest = found[-1].group(1), found[-1].group(2)
            lines = [rest] + lines[lines.index(found[-1].group(0)) + 1:]
    where = ""
    deserializing = re.match(r"^Error when deserializing class '([^']+)'", lines[0]) if lines else None
    inner = [line for line in lines if line.startswith("Exception encountered: ")]
    if deserializing and inner:  # Keras' own cause is the last `Exception encountered:` of the chain
        lines = [inner[-1].removeprefix("Exception encountered: ")]
        where = f" (rebuilding a {deserializing.group(1)})"
    if lines and lines[0].startswith("Exception encountered when calling"):
        where = " (in " + lines.pop(0).removeprefix("Exception encountered when calling").strip(" .") + ")"
    meaningful = next((line for line in lines if not line.startswith(("Arguments received", "•"))), "")
    return f"{kind}: {meaningful}{where}" if meaningful else f"{kind}{where}"
