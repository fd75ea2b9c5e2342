"""One exception type for mistakes a user can fix.

Everything raised as `UserError` is printed as one clear message (file, line when it is known,
key path, what was expected) with exit code 2; anything else that escapes is a bug and keeps
its traceback.
"""

from __future__ import annotations


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
