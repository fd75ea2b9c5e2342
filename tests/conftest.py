"""Shared fixtures: throwaway tfbuild projects in tmp_path, and ways to run the real command.

Models are built with real Keras in the test process and saved to disk; builds run through the
real CLI, which spawns real conversion workers. Nothing is mocked on the conversion path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


class Project:
    """A project folder with helpers to write recipes, models and data, and to run tfbuild."""

    def __init__(self, root: Path):
        self.root = root
        for folder in ("recipes", "models", "data"):
            (root / folder).mkdir(parents=True, exist_ok=True)

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def recipe(self, name: str, text: str) -> Path:
        return self.write(f"recipes/{name}.yaml", text)

    def save_arrays(self, relative: str, **arrays) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        return path

    def run(self, *args: str, env: dict | None = None) -> Result:
        """Run `python -m tfbuild` in a subprocess, exactly as a user would."""
        proc = subprocess.run([sys.executable, "-m", "tfbuild", "-C", str(self.root), *args],
                              capture_output=True, text=True, env={**os.environ, **(env or {})},
                              timeout=600)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "tfbuild", "-C", str(self.root), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    def path(self, relative: str) -> Path:
        return self.root / relative


@pytest.fixture
def project(tmp_path) -> Project:
    return Project(tmp_path / "proj")


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit 2, one clear message on stderr, no traceback."""
    assert result.code == 2, result.text
    assert "Traceback" not in result.text, result.text
    assert result.err.startswith("error:"), result.err
    for fragment in fragments:
        assert fragment in result.err, (fragment, result.err)


# A user of TensorFlow 2.21 with Keras 3 has no tf-keras: a folder that hides it from a build.
NO_TF_KERAS = "raise ImportError('tf-keras is not installed here (hidden by the test)')\n"


def without_tf_keras(folder: Path) -> dict:
    """The environment of a build that cannot import tf-keras (put first on its PYTHONPATH)."""
    (folder / "tf_keras").mkdir(parents=True, exist_ok=True)
    (folder / "tf_keras" / "__init__.py").write_text(NO_TF_KERAS)
    return {"PYTHONPATH": str(folder)}
