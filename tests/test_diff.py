"""`tfbuild diff`: the lock's summaries, two locks compared, the gates, the formats, bad input.

Most tests write locks by hand into real git repositories in tmp_path (no TensorFlow: the
command must not need it); one end-to-end test builds a tiny model, commits, changes it,
rebuilds and diffs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import Result, assert_user_error
from test_incremental import run_watched

ENTRY = {"inputs": {}, "versions": {}, "outputs": {}}


def summary(size=1000, verdict="passed", **figures) -> dict:
    outputs = figures.pop("outputs", {"probs": {"top1_agreement": 0.99, "cosine": 0.9999, "max_abs_error": 0.01,
                                                "mean_abs_error": 0.001, "snr_db": 40.0}})
    return {"verdict": verdict, "size_bytes": size, "outputs": outputs, **figures}


def entry(key: str, **summary_fields) -> dict:
    return {**ENTRY, "key": key, "summary": summary(**summary_fields)}


def lock_text(targets: dict, version: int = 2) -> str:
    return json.dumps({"lock_version": version, "targets": targets}, indent=2, sort_keys=True) + "\n"


class Repo:
    """A git repository whose project (recipes/ + tfbuild.lock) sits in `sub`, or at its root."""

    def __init__(self, root, sub: str = ""):
        self.root = root
        self.project = root / sub if sub else root
        (self.project / "recipes").mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.email", "t@example.com")
        self.git("config", "user.name", "t")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.root), *args], check=True, capture_output=True,
                              text=True).stdout

    def lock(self, targets: dict, version: int = 2) -> None:
        (self.project / "tfbuild.lock").write_text(lock_text(targets, version))

    def commit(self, targets: dict | None = None, message: str = "lock", version: int = 2) -> None:
        if targets is not None:
            self.lock(targets, version)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)

    def diff(self, *args: str) -> Result:
        return tfbuild(self.project, "diff", *args)

    def diff_json(self, *args: str) -> tuple[int, dict]:
        result = self.diff("--format", "json", *args)
        assert result.code in (0, 1), result.text
        return result.code, json.loads(result.out)


def tfbuild(project, *args: str, env: dict | None = None) -> Result:
    proc = subprocess.run([sys.executable, "-m", "tfbuild", "-C", str(project), *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def repo(tmp_path) -> Repo:
    return Repo(tmp_path / "repo", sub="models")


BASE = {"digits:fp32": entry("k1", size=10000), "digits:int8": entry("k2", size=3000, float_ops=0),
        "old:fp32": entry("k3")}


# ------------------------------------------------------------------ the summary the lock keeps

def test_summary_keeps_the_figures_of_a_report_rounded_and_no_latency():
    from tfbuild.lock_summary import summarize

    report = {
        "verdict": "passed", "size_bytes": 45467, "latency_ms": 0.0123, "timings": {"convert_s": 1.2},
        "metrics": {"outputs": {"probs": {"kind": "scores", "finite": True, "top1_agreement": 0.9876543219,
                                          "max_abs_error": 0.0123456789, "mean_abs_error": 1.23456789e-05,
                                          "cosine": 0.99998765, "snr_db": math.inf, "near_ties": 2}},
                    "accuracy": {"output": "probs", "source": 0.98, "tflite": 0.97}},
        "float_ops": {"count": 3, "by_type": {"ELU": 3}, "tensors": ["a", "b", "c"]},
        "float_fallback": {"mode": "auto", "layers": ["outlier/MatMul"], "passed": True},
        "warnings": ["one", "two"],
    }
    found = summarize(report)
    assert found == {"verdict": "passed", "size_bytes": 45467,
                     "outputs": {"probs": {"top1_agreement": 0.987654, "max_abs_error": 0.0123457,
                                           "mean_abs_error": 1.23457e-05, "cosine": 0.999988, "snr_db": "inf"}},
                     "accuracy": 0.97, "accuracy_drop": 0.01, "float_ops": 3,
                     "float_layers": ["outlier/MatMul"], "warnings": 2}
    json.dumps(found, allow_nan=False)  # strict JSON: no Infinity
    assert summarize(None) is None and summarize({"verdict": "rejected"}) is None
    flex = summarize({"verdict": "unverified", "size_bytes": 10, "metrics": {}, "warnings": []})
    assert flex == {"verdict": "unverified", "size_bytes": 10}


def test_a_version_1_lock_reads_as_entries_without_a_summary(tmp_path):
    from tfbuild.errors import UserError
    from tfbuild.lockfile import LOCK_VERSION, parse_lock

    v1 = parse_lock(lock_text({"a:fp32": {**ENTRY, "key": "k"}}, version=1), "tfbuild.lock")
    assert v1.sound and v1.targets["a:fp32"]["key"] == "k" and "summary" not in v1.targets["a:fp32"]
    assert v1.document()["lock_version"] == LOCK_VERSION == 2
    bad = parse_lock(lock_text({"a:fp32": {**ENTRY, "key": "k", "summary": {"verdict": "passed"}}}), "x.lock")
    assert "targets.a:fp32.summary.size_bytes: missing" in str(bad.damage)
    with pytest.raises(UserError, match="lock_version 3 is from a newer tfbuild"):
        parse_lock(lock_text({}, version=3), "tfbuild.lock")


# ------------------------------------------------------------------ comparing two locks

def test_targets_are_added_removed_rebuilt_or_unchanged_with_each_figure_old_and_new():
    from tfbuild.diff.compare import compare

    new = {"digits:fp32": BASE["digits:fp32"],
           "digits:int8": entry("k2b", size=3100, float_ops=2,
                                outputs={"probs": {"top1_agreement": 0.97, "cosine": 0.9999, "snr_db": "inf"}}),
           "new:fp16": entry("k4", size=500)}
    changes = {c.target: c for c in compare(BASE, new)}
    assert {t: c.status for t, c in changes.items()} == {
        "digits:fp32": "unchanged", "digits:int8": "rebuilt", "new:fp16": "added", "old:fp32": "removed"}
    assert changes["digits:fp32"].figures == []
    changed = {f.label: f for f in changes["digits:int8"].changed_figures}
    assert set(changed) == {"size", "top1_agreement", "float_ops", "snr_db", "max_abs_error", "mean_abs_error"}
    assert changed["size"].delta == 100 and changed["size"].relative == pytest.approx(100 / 3000)
    assert changed["size"].change == "+100 (+3.33%)"
    assert changed["top1_agreement"].delta == pytest.approx(-0.02)
    assert changed["snr_db"].delta == math.inf  # 40 dB -> exact
    assert changed["max_abs_error"].new is None  # no longer measured: shown, never a change
    assert changes["new:fp16"].figures[0].old is None and changes["new:fp16"].figures[0].new == 500


def test_outputs_are_named_only_when_a_model_has_several():
    from tfbuild.diff.compare import compare

    two = {"boxes": {"max_abs_error": 0.1}, "scores": {"top1_agreement": 0.9}}
    old = {"det:int8": entry("a", outputs=two)}
    new = {"det:int8": entry("b", outputs={**two, "scores": {"top1_agreement": 0.8}})}
    (change,) = compare(old, new)
    assert [f.label for f in change.changed_figures] == ["scores: top1_agreement"]


def test_a_rebuilt_target_without_a_summary_on_one_side_says_so():
    from tfbuild.diff.compare import compare

    (change,) = compare({"a:fp32": {**ENTRY, "key": "k"}}, {"a:fp32": entry("k2")})
    assert change.status == "rebuilt" and change.figures == []
    assert "the old entry has no figures (lock_version 1)" in change.note


# ------------------------------------------------------------------ rules

@pytest.mark.parametrize("text, metric, direction, tolerance, relative", [
    ("size:+5%", "size", 1, 0.05, True), ("top1_agreement:-0.005", "top1_agreement", -1, 0.005, False),
    ("accuracy_drop:+0.002", "accuracy_drop", 1, 0.002, False), ("float_ops:+0", "float_ops", 1, 0.0, False),
    ("size:+4096", "size", 1, 4096, False), ("cosine:-.5%", "cosine", -1, 0.005, True),
    ("verdict", "verdict", 0, 0.0, False), ("removed", "removed", 0, 0.0, False)])
def test_rules_parse(text, metric, direction, tolerance, relative):
    from tfbuild.diff.gate import parse_rule

    rule = parse_rule(text)
    assert (rule.metric, rule.direction, rule.relative) == (metric, direction, relative)
    assert rule.tolerance == pytest.approx(tolerance)


@pytest.mark.parametrize("text, says", [
    ("size:5%", "size needs a signed tolerance (+N, -N, +N% or -N%), not 5%"),
    ("size", "size needs a signed tolerance (+N, -N, +N% or -N%)"), ("sise:+5%", "unknown figure sise"),
    ("size:+5%%", "not +5%%"), ("size:+five", "not +five"), ("", "not a rule"), (":+1", "not a rule"),
    ("size:+-1", "not +-1"), ("verdict:+1", "verdict takes no tolerance"), ("size:+ 5", "not + 5")])
def test_bad_rules_are_user_errors(text, says):
    from tfbuild.diff.gate import parse_rule
    from tfbuild.errors import UserError

    with pytest.raises(UserError) as raised:
        parse_rule(text)
    assert says in raised.value.message and "FIGURE:+N" in raised.value.expected


def test_rules_fire_on_rebuilt_targets_beyond_their_tolerance_only():
    from tfbuild.diff.gate import check, parse_rule
    from tfbuild.diff.compare import compare

    old = {**BASE, "same:fp32": entry("s", size=1)}
    new = {"digits:fp32": entry("k1b", size=10500),  # +5 % exactly: within size:+5%
           "digits:int8": entry("k2b", size=3000, verdict="unverified", float_ops=0,
                                outputs={"probs": {"top1_agreement": 0.98}}),
           "same:fp32": entry("s", size=999999, verdict="unverified")}  # same key: never judged
    changes = compare(old, new)
    fired = lambda *rules: [str(f) for f in check([parse_rule(r) for r in rules], changes)]  # noqa: E731
    assert fired("size:+5%") == []
    assert fired("size:+4.9%") == ["size:+4.9%: digits:fp32: size 10000 -> 10500, +500 (+5.00%)"]
    assert fired("size:+499") == ["size:+499: digits:fp32: size 10000 -> 10500, +500 (+5.00%)"]
    assert fired("size:-1%") == []
    assert fired("top1_agreement:-0.01") == []
    assert fired("top1_agreement:-0.005") == [
        "top1_agreement:-0.005: digits:int8: top1_agreement 0.99 -> 0.98, -0.01 (-1.01%)"]
    assert fired("verdict") == ["verdict: digits:int8: verdict passed -> unverified"]
    assert fired("removed") == ["removed: old:fp32: removed"]
    assert fired("float_ops:+0", "accuracy_drop:+0") == []


# ------------------------------------------------------------------ the command, in git

def test_diff_against_head_and_a_branch_in_a_project_in_a_subfolder(repo):
    repo.commit(BASE)
    repo.git("branch", "topic")
    assert repo.diff_json()[1]["counts"] == {"added": 0, "removed": 0, "rebuilt": 0, "unchanged": 3}
    repo.lock({**BASE, "digits:int8": entry("k2b", size=3300, float_ops=1)})
    code, found = repo.diff_json()
    assert code == 0 and found["counts"]["rebuilt"] == 1
    assert found["revision"]["lock"] == "HEAD:models/tfbuild.lock"
    int8 = next(t for t in found["targets"] if t["target"] == "digits:int8")
    size = next(f for f in int8["figures"] if f["figure"] == "size")
    assert size == {"figure": "size", "output": None, "old": 3000, "new": 3300, "change": 300, "relative": 0.1}
    repo.commit(message="bigger int8")
    assert repo.diff_json()[1]["counts"]["rebuilt"] == 0  # HEAD now has it
    assert repo.diff_json("topic")[1]["counts"]["rebuilt"] == 1
    assert repo.diff_json("HEAD~1")[1]["counts"]["rebuilt"] == 1


def test_merge_base_form_compares_with_where_the_branch_left(repo):
    repo.commit(BASE)
    repo.git("checkout", "-q", "-b", "topic")
    repo.commit({**BASE, "digits:fp32": entry("k1b", size=12000)}, "topic grows fp32")
    repo.git("checkout", "-q", "main")
    repo.commit({**BASE, "extra:fp32": entry("e")}, "main adds a target")
    repo.git("checkout", "-q", "topic")
    _, plain = repo.diff_json("main")  # main's tip has extra:fp32: it looks removed here
    assert plain["counts"] == {"added": 0, "removed": 1, "rebuilt": 1, "unchanged": 2}
    _, based = repo.diff_json("main...")  # the merge base has not: only the topic's own change
    assert based["counts"] == {"added": 0, "removed": 0, "rebuilt": 1, "unchanged": 2}
    _, based = repo.diff_json("main...topic")
    assert based["counts"] == {"added": 0, "removed": 0, "rebuilt": 1, "unchanged": 2}
    repo.lock({**BASE, "digits:fp32": entry("k1c", size=13000)})
    _, based = repo.diff_json("main...", "digits:fp32")
    assert [t["target"] for t in based["targets"]] == ["digits:fp32"] and based["counts"]["rebuilt"] == 1


def test_gate_exit_codes_and_the_rules_that_fired_are_listed(repo):
    repo.commit(BASE)
    repo.lock({"digits:fp32": BASE["digits:fp32"],
               "digits:int8": entry("k2b", size=3300, float_ops=0, outputs={"probs": {"top1_agreement": 0.97}}),
               "old:fp32": BASE["old:fp32"]})
    passing = repo.diff("--fail-on", "size:+10%", "--fail-on", "top1_agreement:-0.05")
    assert passing.code == 0, passing.text
    failing = repo.diff("--fail-on", "size:+5%", "--fail-on", "top1_agreement:-0.005", "--fail-on", "verdict")
    assert failing.code == 1, failing.text
    assert "gate failed: 2 rule(s) fired" in failing.out
    assert "size:+5%: digits:int8: size 3000 -> 3300, +300 (+10.00%)" in failing.out
    assert "top1_agreement:-0.005: digits:int8: top1_agreement 0.99 -> 0.97," in failing.out
    only_fp32 = repo.diff("digits:fp32", "--fail-on", "size:+0")  # the regression is elsewhere
    assert only_fp32.code == 0, only_fp32.text
    markdown = repo.diff("--format", "markdown", "--fail-on", "size:+5%")
    assert markdown.code == 1
    assert "| digits:int8 | rebuilt | size | 3000 | 3300 | +300 (+10.00%) |" in markdown.out
    assert "**Gate failed**: 1 rule(s) fired" in markdown.out


def test_an_unchanged_lock_never_fires_any_gate(repo):
    repo.commit(BASE)
    rules = [arg for rule in ("size:+0", "top1_agreement:-0", "cosine:-0%", "verdict", "removed", "float_ops:+0")
             for arg in ("--fail-on", rule)]
    result = repo.diff(*rules)
    assert result.code == 0, result.text
    assert "0 added, 0 removed, 0 rebuilt, 3 unchanged" in result.out


def test_the_table_marks_a_flipped_verdict_and_lists_added_and_removed(repo):
    repo.commit(BASE)
    repo.lock({"digits:fp32": BASE["digits:fp32"], "digits:int8": entry("k2b", size=3000, verdict="unverified",
                                                                       float_ops=0),
               "new:fp16": entry("k9", size=700)})
    result = repo.diff()
    assert result.code == 0, result.text
    lines = result.out.splitlines()
    assert "1 added, 1 removed, 1 rebuilt, 1 unchanged" in lines[0]
    assert any("digits:int8" in line and "passed" in line and "unverified" in line and "verdict flipped" in line
               for line in lines), result.out
    assert any(line.startswith("new:fp16") and "added" in line and "700" in line for line in lines), result.out
    assert any(line.startswith("old:fp32") and "removed" in line for line in lines), result.out
    assert "digits:fp32" not in result.out  # unchanged: counted, not listed


def test_markdown_escapes_tensor_names():
    from tfbuild.diff.show import markdown
    from tfbuild.diff.compare import compare

    two = {"a|b": {"cosine": 0.5}, "c_d*": {"cosine": 0.5}}
    changes = compare({"x:fp32": entry("1", outputs=two)},
                      {"x:fp32": entry("2", outputs={"a|b": {"cosine": 0.6}, "c_d*": {"cosine": 0.4}})})
    text = markdown(changes, "tfbuild diff: HEAD → working tree", [])
    assert "| a\\|b: cosine | 0.5 | 0.6 |" in text and "| c\\_d\\*: cosine |" in text


def test_a_version_1_lock_at_the_revision_still_compares(repo):
    repo.commit({"digits:fp32": {**ENTRY, "key": "k1"}, "digits:int8": {**ENTRY, "key": "k2"}}, version=1)
    repo.lock({"digits:fp32": entry("k1"), "digits:int8": entry("k2b")})
    code, found = repo.diff_json("--fail-on", "size:+0", "--fail-on", "verdict")
    assert code == 0 and found["counts"] == {"added": 0, "removed": 0, "rebuilt": 1, "unchanged": 1}
    int8 = next(t for t in found["targets"] if t["target"] == "digits:int8")
    assert "no figures (lock_version 1)" in int8["note"]


# ------------------------------------------------------------------ bad input

def test_bad_revisions_and_targets_are_located_user_errors(repo):
    repo.commit(BASE)
    assert_user_error(repo.diff("no-such-branch"), "no-such-branch is neither a revision git knows nor a target")
    assert_user_error(repo.diff("HEAD", "nosuch:int8"), "no target in either lock matches nosuch:int8")
    assert_user_error(repo.diff("HEAD", "zzz"), "no target in either lock matches zzz")
    assert_user_error(repo.diff("HEAD~5"), "HEAD~5 is neither a revision git knows nor a target")
    assert_user_error(repo.diff("main...nope"), "unknown revision: nope", "hint: git fetch it first")
    repo.git("checkout", "-q", "--orphan", "unrelated")
    repo.commit(BASE, "no shared history")
    assert_user_error(repo.diff("main..."), "main and HEAD have no common ancestor")
    assert_user_error(repo.diff("--fail-on", "size:5%"), "--fail-on size:5%: size needs a signed tolerance")
    assert_user_error(repo.diff("--format", "markdown", "--fail-on", "nope"), "--fail-on nope: unknown figure nope")


def test_a_revision_without_a_lock(repo):
    (repo.project / "README").write_text("no lock yet\n")
    repo.commit(message="before the lock")
    repo.commit(BASE)
    assert_user_error(repo.diff("HEAD~1"), "models/tfbuild.lock", "revision HEAD~1 has no models/tfbuild.lock")


def test_damaged_locks_on_either_side(repo):
    repo.commit(BASE)
    good = (repo.project / "tfbuild.lock").read_text()
    (repo.project / "tfbuild.lock").write_text("<<<<<<< HEAD\n" + good + "=======\n" + good + ">>>>>>> topic\n")
    assert_user_error(repo.diff(), "tfbuild.lock: line 1: merge conflict marker (the lock file is damaged)")
    repo.commit(message="a damaged lock committed")
    (repo.project / "tfbuild.lock").write_text(good)
    assert_user_error(repo.diff(), "HEAD:models/tfbuild.lock: line 1: merge conflict marker",
                      "the lock at HEAD is damaged")
    (repo.project / "tfbuild.lock").write_text('{"lock_version": 2, "targets": {"a:fp32": {"key": 1}}}')
    assert_user_error(repo.diff("HEAD~1"), "targets.a:fp32.key: expected a string")
    (repo.project / "tfbuild.lock").unlink()
    assert_user_error(repo.diff("HEAD~1"), "no lock file")


def test_not_a_git_repository_and_no_git(tmp_path):
    project = tmp_path / "plain"
    (project / "recipes").mkdir(parents=True)
    (project / "tfbuild.lock").write_text(lock_text(BASE))
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}
    assert_user_error(tfbuild(project, "diff", env=env), "not in a git repository")
    bin_dir = tmp_path / "bin"  # a PATH with python but no git
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    assert_user_error(tfbuild(project, "diff", env={**env, "PATH": str(bin_dir)}), "git is not installed")


def test_diff_flags_belong_to_diff(repo):
    repo.commit(BASE)
    assert_user_error(tfbuild(repo.project, "status", "--format", "json"), "--format does not apply to `tfbuild status`")


# ------------------------------------------------------------------ fast, and no TensorFlow

def test_a_hundred_targets_diff_in_under_a_second_without_tensorflow(repo):
    old = {f"r{i}:{t}": entry(f"{i}{t}", size=1000 + i) for i in range(25) for t in ("fp32", "fp16", "dynamic", "int8")}
    repo.commit(old)
    repo.lock({target: entry(value["key"] + ("b" if i % 3 == 0 else ""), size=1100 + i)
               for i, (target, value) in enumerate(old.items())})
    started = time.perf_counter()
    code, out = run_watched(repo.project, "diff", "--fail-on", "size:+50%")
    elapsed = time.perf_counter() - started
    assert code == 0, out
    assert "34 rebuilt, 66 unchanged" in out and "HEAVY []" in out, out
    assert elapsed < 1.0, f"{elapsed:.2f}s"


# ------------------------------------------------------------------ end to end: a real build

@pytest.mark.slow
def test_a_retrained_model_shows_its_changes_and_fails_the_gate(project, tmp_path):
    """Build, commit, retrain (a wider model), rebuild: diff shows the size and metric changes
    of both targets from the summaries the build wrote; a size gate fires, a loose one does
    not. A cache pull in a fresh clone records the same summaries as the build that pushed."""
    from models import dense_classifier, write_dense_project

    write_dense_project(project, targets="fp32: {}\nint8: {quantize: int8, io: int8}")
    cache = tmp_path / "cache"
    first = project.run("--cache", str(cache))
    assert first.code == 0 and "2 built" in first.out, first.text
    lock = json.loads(project.path("tfbuild.lock").read_text())
    assert lock["lock_version"] == 2
    for target in ("clf:fp32", "clf:int8"):
        report = json.loads(project.path(f"build/clf/{target.split(':')[1]}/report.json").read_text())
        summary = lock["targets"][target]["summary"]
        assert summary["size_bytes"] == report["size_bytes"] and summary["verdict"] == "passed"
        assert set(summary["outputs"]["probs"]) >= {"top1_agreement", "cosine", "max_abs_error"}
        assert "latency_ms" not in json.dumps(summary)
    assert lock["targets"]["clf:int8"]["summary"]["float_ops"] == 0

    clone = tmp_path / "clone"  # a teammate's checkout: no build, no state, no lock; the cache has it all
    shutil.copytree(project.root, clone, ignore=shutil.ignore_patterns("build", ".tfbuild", "tfbuild.lock"))
    pulled = tfbuild(clone, "--cache", str(cache))
    assert pulled.code == 0 and "2 cached" in pulled.out, pulled.text
    assert json.loads((clone / "tfbuild.lock").read_text()) == lock

    git = Repo.__new__(Repo)
    git.root = git.project = project.root
    git.git("init", "-q", "-b", "main")
    git.git("config", "user.email", "t@example.com")
    git.git("config", "user.name", "t")
    project.write(".gitignore", "build/\n.tfbuild/\n")
    git.commit(message="clf, built")
    assert git.diff("--fail-on", "size:+0", "--fail-on", "verdict").code == 0

    dense_classifier(project.path("models/clf.keras"), hidden=64, seed=3)  # retrained, wider
    rebuilt = project.run()
    assert rebuilt.code == 0 and "2 built" in rebuilt.out, rebuilt.text
    code, found = git.diff_json()
    assert code == 0 and found["counts"] == {"added": 0, "removed": 0, "rebuilt": 2, "unchanged": 0}
    for target in found["targets"]:
        size = next(f for f in target["figures"] if f["figure"] == "size")
        assert size["new"] > size["old"] * 1.3 and size["relative"] > 0.3, size
    table = git.diff("--fail-on", "size:+30%", "--fail-on", "size:+1000%")
    assert table.code == 1, table.text
    assert "gate failed: 2 rule(s) fired" in table.out
    assert "size:+30%: clf:fp32: size" in table.out and "size:+30%: clf:int8: size" in table.out
    assert "size:+1000%" not in table.out.split("gate failed")[1]
    assert any(line.startswith("clf:int8") and "rebuilt" in line for line in table.out.splitlines()), table.out
    assert git.diff("clf:int8", "--fail-on", "size:+1000%", "--fail-on", "verdict").code == 0
