"""The lock as a git revision has it, read through the `git` command.

`tfbuild diff` compares the committed lock of a revision with the working tree's. The project
may sit in a sub-folder of its repository, so the lock is found by the project's path inside
the repository (`git rev-parse --show-prefix`), not by the repository's root. Each way this can
go wrong is its own user error, named with the revision: git is not installed, the project is
not in a repository, the revision does not exist, or it has no lock at that path. Git runs
with `LC_ALL=C` and its answers are told apart by exit status, never by parsing its messages.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tfbuild.errors import UserError
from tfbuild.lockfile import Lock, parse_lock
from tfbuild.project import LOCK_FILE

MERGE_BASE = "..."  # `main...` (or `main...topic`): where the branches split, as git diff reads it


def lock_at(root: Path, revision: str) -> Lock:
    """The lock committed at `revision`, parsed (damage is the caller's to judge)."""
    prefix = _git(root, "rev-parse", "--show-prefix", what="find the git repository").strip()
    commit = resolve(root, revision)
    path = f"{prefix}{LOCK_FILE}"
    shown = f"{revision}:{path}"
    found = _run(root, "cat-file", "blob", f"{commit}:{path}")
    if found.returncode != 0:
        raise UserError(f"revision {revision} has no {path}", file=shown,
                        hint="compare with a revision that has a lock (tfbuild diff REV), or commit one")
    try:
        text = found.stdout.decode("utf-8")
    except UnicodeDecodeError:
        text = found.stdout.decode("utf-8", "replace")  # parsed as damaged JSON, located by line
    return parse_lock(text, shown)


def resolve(root: Path, revision: str) -> str:
    """The commit a revision names: any rev-parse form, or `A...B` for the merge base of A and B
    (an empty side is HEAD, so `main...` is where this branch left main)."""
    if revision.startswith("-"):
        raise UserError(f"not a revision: {revision}", expected="a commit, branch, tag or A...B")
    if MERGE_BASE in revision:
        left, right = (side or "HEAD" for side in revision.split(MERGE_BASE, 1))
        base = _run(root, "merge-base", resolve(root, left), resolve(root, right))
        if base.returncode != 0:
            raise UserError(f"{left} and {right} have no common ancestor", key=revision,
                            expected="two revisions that share history")
        return base.stdout.decode().strip()
    found = _run(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}")
    if found.returncode != 0:
        raise UserError(f"unknown revision: {revision}", expected="a commit, branch, tag or A...B known to git",
                        hint="git fetch it first (CI checkouts are often shallow: fetch-depth: 0)")
    return found.stdout.decode().strip()


def is_revision(root: Path, text: str) -> bool:
    """Whether git knows `text` as a revision (for telling a revision argument from a target)."""
    if text.startswith("-"):
        return False
    if MERGE_BASE in text:
        return True
    return _run(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{text}^{{commit}}").returncode == 0


def _git(root: Path, *args: str, what: str) -> str:
    found = _run(root, *args)
    if found.returncode != 0:
        detail = found.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UserError(f"cannot {what}: the project is not in a git repository", file=str(root),
                        hint=detail[-1] if detail else "run tfbuild diff inside a git checkout")
    return found.stdout.decode()


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                              env={**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"})
    except FileNotFoundError:
        raise UserError("git is not installed (or not on PATH)",
                        hint="tfbuild diff reads the committed lock through the git command: install git") from None
