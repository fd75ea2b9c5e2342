"""`tfbuild diff [REV] [TARGET ...]`: the lock at a git revision against the working tree's.

The command's whole flow, for cli.py to call: rules parsed first (a bad rule fails before git
runs), the revision told apart from targets, both locks read strictly (a damaged one on either
side is a located user error: a diff of salvaged entries would pass a gate it should fail),
compared, shown, and the gate applied. Exit 0, or 1 when a `--fail-on` rule fired.
"""

from __future__ import annotations

import sys

from tfbuild.diff import git_lock, show
from tfbuild.diff.gate import check, parse_rule
from tfbuild.errors import UserError
from tfbuild.diff.compare import compare, select
from tfbuild.lockfile import Lock, read_lock

DEFAULT_REVISION = "HEAD"


def run_diff(project, args: list[str], fmt: str, rule_texts: list[str]) -> int:
    rules = [parse_rule(text) for text in rule_texts]
    revision, patterns, guessed = _revision_and_targets(project, args)
    old = git_lock.lock_at(project.root, revision)
    if old.damage is not None:
        raise UserError(f"{old.damage} (the lock at {revision} is damaged)", file=old.file,
                        hint="compare with another revision (the lock was committed damaged there)")
    new = read_lock(project)
    new.require_sound()
    changes = compare(old.targets, new.targets, _targets(old, new, patterns, guessed))
    firings = check(rules, changes)
    fired = [str(firing) for firing in firings]
    heading = f"tfbuild diff: {revision} → working tree"
    if fmt == "json":
        revision_info = {"revision": revision, "commit": git_lock.resolve(project.root, revision), "lock": old.file}
        sys.stdout.write(show.as_json(changes, revision_info, [
            {"rule": f.rule.text, "target": f.target, "why": f.why} for f in firings]))
    elif fmt == "markdown":
        sys.stdout.write(show.markdown(changes, heading, fired))
    else:
        show.table(changes, heading, fired, _console())
    return 1 if firings else 0


def _revision_and_targets(project, args: list[str]) -> tuple[str, list[str], bool]:
    """REV first when git knows it; otherwise every argument is a target and REV is HEAD.
    The last value says that the first argument was taken for a target only for want of a
    revision, so that naming neither says so."""
    if args and git_lock.is_revision(project.root, args[0]):
        return args[0], args[1:], False
    return DEFAULT_REVISION, list(args), bool(args)


def _targets(old: Lock, new: Lock, patterns: list[str], guessed: bool) -> list[str]:
    try:
        return select(old.targets, new.targets, patterns)
    except UserError as err:
        if guessed and err.key == patterns[0]:
            raise UserError(f"{patterns[0]} is neither a revision git knows nor a target in either lock",
                            expected="tfbuild diff [REV] [TARGET ...]: a commit, branch, tag or A...B, "
                                     "then recipe, recipe:target or globs") from None
        raise


def _console():
    from rich.console import Console

    return Console(highlight=False) if sys.stdout.isatty() else Console(highlight=False, width=200)
