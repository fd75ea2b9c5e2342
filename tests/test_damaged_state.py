"""Damaged files: a conflicted or truncated tfbuild.lock, a hand-edited .tfbuild/ state, caches
with the wrong types. Each is either recovered from (rebuilding only what the build can no longer
vouch for) or named with its file, line and cause (exit 2); never a traceback, never a wrong
"up to date". One real build per module; every probe runs on a copy of it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess

import pytest

from conftest import Project, Result, assert_user_error
from models import write_dense_project
from test_incremental import run_watched

TARGETS = "fp32: {}\nfp16: {quantize: float16}"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Project:
    """A one-recipe project with two targets, built once (the only TensorFlow run of most tests)."""
    project = Project(tmp_path_factory.mktemp("built") / "proj")
    write_dense_project(project, targets=TARGETS)
    result = project.run()
    assert result.code == 0 and "2 built" in result.out, result.text
    return project


@pytest.fixture
def copy(built, tmp_path):
    """A fresh copy of the built project for each probe (outputs, state and lock included)."""
    counter = iter(range(1000))

    def make() -> Project:
        root = tmp_path / f"copy{next(counter)}"
        shutil.copytree(built.root, root, symlinks=True)
        return Project(root)

    return make


def run_here(project: Project, *args: str) -> Result:
    """tfbuild in this process, for commands that never reach TensorFlow (checks, dry runs,
    no-op builds): a probe costs milliseconds instead of an interpreter start. A bug surfaces
    as the exception itself, which fails the test as a traceback would."""
    from tfbuild.cli import main

    out, err = io.StringIO(), io.StringIO()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGPIPE, signal.SIGTERM)}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["-C", str(project.root), *args])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return Result(code, out.getvalue(), err.getvalue())


def assert_no_traceback(result) -> None:
    assert "Traceback" not in result.text and result.code in (0, 1, 2), result.text


def merge_conflict(ours: dict, theirs: dict, base: dict, tmp_path) -> str:
    """The lock as `git merge` leaves it when both sides changed the same lines."""
    files = {}
    for name, document in (("ours", ours), ("base", base), ("theirs", theirs)):
        files[name] = tmp_path / f"{name}.lock"
        files[name].write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    merged = subprocess.run(["git", "merge-file", "-p", "-L", "HEAD", "-L", "base", "-L", "topic",
                             files["ours"], files["base"], files["theirs"]], capture_output=True, text=True)
    assert merged.returncode > 0 and "<<<<<<< HEAD" in merged.stdout, merged
    return merged.stdout


def with_key(lock: dict, target: str, key: str) -> dict:
    changed = json.loads(json.dumps(lock))
    changed["targets"][target]["key"] = key
    return changed


@pytest.mark.slow
def test_a_damaged_lock_is_named_by_check_and_rewritten_by_a_noop_build(built, copy, tmp_path):
    good = built.path("tfbuild.lock").read_text()
    lock = json.loads(good)
    conflicted = merge_conflict(lock, with_key(lock, "clf:fp16", "f" * 64), with_key(lock, "clf:fp16", "0" * 64), tmp_path)
    marker_line = conflicted.splitlines().index("<<<<<<< HEAD") + 1
    wrong_type = json.loads(good)
    wrong_type["targets"]["clf:fp32"]["outputs"] = ["build/clf/fp32/model.tflite"]
    missing_key = json.loads(good)
    del missing_key["targets"]["clf:fp16"]["key"]
    damages = {  # what is written -> what check says
        "conflict": (conflicted, f"line {marker_line}: merge conflict marker"),
        "truncated": (good[: len(good) // 2], "not valid JSON"),
        "garbage": (b"\x00\xff\xfe garbage \x80", "line 1: not UTF-8 text"),
        "empty": ("", "line 1: empty file"),
        "a list": ("[]\n", "line 1: expected an object, found a list"),
        "unknown version": (good.replace('"lock_version": 2', '"lock_version": 0'), "line 2: unknown lock_version 0"),
        "wrong type": (json.dumps(wrong_type, indent=2), "targets.clf:fp32.outputs: expected an object, found a list"),
        "missing key": (json.dumps(missing_key, indent=2), "targets.clf:fp16.key: missing"),
    }
    for name, (content, cause) in damages.items():
        project = copy()
        lock_path = project.path("tfbuild.lock")
        lock_path.write_bytes(content) if isinstance(content, bytes) else lock_path.write_text(content)
        check = run_here(project, "check")
        assert_user_error(check, "tfbuild.lock: ", cause, "the lock file is damaged",
                          "hint: run tfbuild to regenerate it from the build state, then commit it")
        assert "no lock file" not in check.err, (name, check.err)
        if name == "conflict":  # the no-op build, in a fresh interpreter: still no TensorFlow
            code, out = run_watched(project.root)
            assert "HEAVY []" in out, out
        else:
            result = run_here(project)
            code, out = result.code, result.text
        assert code == 0 and "all 2 target(s) up to date" in out, (name, out)
        assert "tfbuild.lock was damaged (" in out and cause in out and "rewritten from the build state" in out, (name, out)
        assert lock_path.read_text() == good, name  # both targets vouched for by the state
        assert run_here(project, "check").code == 0, name
        again = run_here(project)
        assert again.code == 0 and "tfbuild.lock" not in again.out, (name, again.text)  # repaired once


@pytest.mark.slow
def test_a_missing_lock_stays_no_lock_file_and_a_build_writes_it(copy):
    project = copy()
    good = project.path("tfbuild.lock").read_text()
    project.path("tfbuild.lock").unlink()
    assert_user_error(run_here(project, "check"), "tfbuild.lock: no lock file")
    assert "would rewrite tfbuild.lock: it was missing" in run_here(project, "-n").out
    result = run_here(project)
    assert result.code == 0 and "tfbuild.lock was missing: rewritten from the build state" in result.out, result.text
    assert project.path("tfbuild.lock").read_text() == good

    # A target whose last build failed is in the lock as its last good build, versions included.
    state_path = project.path(".tfbuild/state.json")
    state = json.loads(state_path.read_text())
    state["targets"]["clf:fp16"].update(verdict="failed", failures=["boom"],
                                        last_good=json.loads(good)["targets"]["clf:fp16"])
    state_path.write_text(json.dumps(state))
    project.path("tfbuild.lock").unlink()
    assert run_here(project).code == 0
    assert project.path("tfbuild.lock").read_text() == good


@pytest.mark.slow
def test_a_conflict_keeps_the_readable_entries_of_targets_not_built_here(copy, tmp_path):
    """Two sides that are each a valid lock: entries they agree on (or only one has) survive for
    targets this checkout did not build; entries they disagree on are the build state's to say."""
    project = copy()
    project.recipe("other", "tfbuild: 1\nmodel: {source: models/other.keras}\ntargets: {a: {}, b: {}, c: {}}\n")
    lock = json.loads(project.path("tfbuild.lock").read_text())
    entry = lock["targets"]["clf:fp32"]
    base = json.loads(json.dumps(lock))
    base["targets"].update({"other:a": {**entry, "key": "a" * 64}, "other:b": {**entry, "key": "b" * 64}})
    ours = with_key(base, "other:b", "1" * 64)
    ours = with_key(ours, "clf:fp16", "2" * 64)  # stale: the state has the real one
    theirs = with_key(base, "other:b", "3" * 64)
    theirs["targets"]["other:c"] = {**entry, "key": "c" * 64}
    project.path("tfbuild.lock").write_text(merge_conflict(ours, theirs, base, tmp_path))
    result = run_here(project, "clf")
    assert result.code == 0 and "merge conflict marker" in result.out, result.text
    merged = json.loads(project.path("tfbuild.lock").read_text())["targets"]
    assert merged["clf:fp32"] == lock["targets"]["clf:fp32"] and merged["clf:fp16"] == lock["targets"]["clf:fp16"]
    assert merged["other:a"]["key"] == "a" * 64 and merged["other:c"]["key"] == "c" * 64
    assert "other:b" not in merged  # the sides disagree and nothing here vouches for either
    assert run_here(project, "check", "clf").code == 0


STATE_DAMAGE = {  # name -> (how state.json is damaged, targets rebuilt, what explain says)
    "garbage": (lambda s: b"\x89PNG\x00\x01", {"clf:fp32", "clf:fp16"}, "line 1: not UTF-8 text"),
    "truncated": (lambda s: json.dumps(s)[:200], {"clf:fp32", "clf:fp16"}, "not valid JSON"),
    "empty": (lambda s: "", {"clf:fp32", "clf:fp16"}, "empty file"),
    "a list": (lambda s: [s], {"clf:fp32", "clf:fp16"}, "expected an object, found a list"),
    "targets a list": (lambda s: {**s, "targets": [1]}, {"clf:fp32", "clf:fp16"}, "targets: expected an object"),
    "version a string": (lambda s: {**s, "version": "1"}, {"clf:fp32", "clf:fp16"}, "version: expected an integer"),
    "entry a string": (lambda s: _entry(s, "clf:fp32", lambda e: "passed"), {"clf:fp32"}, "targets.clf:fp32: expected an object"),
    "no outputs": (lambda s: _entry(s, "clf:fp32", lambda e: _without(e, "outputs")), {"clf:fp32"}, "targets.clf:fp32.outputs: missing"),
    "outputs a list": (lambda s: _entry(s, "clf:fp16", lambda e: {**e, "outputs": list(e["outputs"])}), {"clf:fp16"},
                       "targets.clf:fp16.outputs: expected an object, found a list"),
    "unknown verdict": (lambda s: _entry(s, "clf:fp32", lambda e: {**e, "verdict": "ok"}), {"clf:fp32"}, "verdict: expected one of"),
    "last_good a list": (lambda s: _entry(s, "clf:fp16", lambda e: {**e, "verdict": "failed", "last_good": []}), {"clf:fp16"},
                         "targets.clf:fp16.last_good: expected an object, found a list"),
    "loader_outputs null": (lambda s: _entry(s, "clf:fp32", lambda e: {**e, "loader_outputs": None}), {"clf:fp32"},
                            "loader_outputs: expected an object, found null"),
}


def _entry(state: dict, target: str, change) -> dict:
    return {**state, "targets": {**state["targets"], target: change(state["targets"][target])}}


def _without(entry: dict, key: str) -> dict:
    return {k: v for k, v in entry.items() if k != key}


@pytest.mark.slow
def test_a_damaged_state_rebuilds_what_it_no_longer_vouches_for(copy):
    for name, (damage, rebuilt, cause) in STATE_DAMAGE.items():
        project = copy()
        state_path = project.path(".tfbuild/state.json")
        damaged = damage(json.loads(state_path.read_text()))
        if isinstance(damaged, bytes):
            state_path.write_bytes(damaged)
        else:
            state_path.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
        dry = run_here(project, "-n")
        would = {line.split()[2].rstrip(":") for line in dry.out.splitlines() if line.startswith("would convert")}
        assert dry.code == 0 and would == rebuilt, (name, dry.text)
        assert ".tfbuild/state.json is damaged (" in dry.out and cause in dry.out, (name, dry.out)
        for command in (["status"], ["explain", *sorted(rebuilt)], ["clean", "-n"]):
            assert run_here(project, *command).code in (0, 1), (name, command)
        if rebuilt == {"clf:fp32", "clf:fp16"}:
            continue
        clean = run_here(project, "clean", "clf:fp32")  # writes the state back: damaged entries are dropped
        assert clean.code == 0, (name, clean.text)
        state = json.loads(state_path.read_text())["targets"]
        assert "clf:fp32" not in state and set(state) <= {"clf:fp16"}, name


@pytest.mark.slow
def test_a_damaged_state_and_private_folders_recover_in_one_build(copy):
    """state.json is garbage, logs/ and rejected/ are files: the next build rebuilds everything,
    says why in one line, and keeps a rejected file as usual."""
    project = copy()
    project.path(".tfbuild/state.json").write_text("{\"version\": 1, \"targets\": {\"clf:fp32\": {\"key\": ")
    shutil.rmtree(project.path(".tfbuild/logs"))
    project.path(".tfbuild/logs").write_text("not a folder")
    project.path(".tfbuild/rejected").write_text("not a folder")
    result = project.run("targets.fp16.accept.max_size_kb=0.001")  # fp16 is rejected, by design
    assert_no_traceback(result)
    assert result.code == 1 and "built clf:fp32" in result.out and "rejected clf:fp16" in result.out, result.text
    assert ".tfbuild/state.json was damaged (line 1: not valid JSON" in result.out, result.out
    assert project.path(".tfbuild/logs/clf.log").is_file()
    assert project.path(".tfbuild/rejected/clf/fp16/model.tflite").is_file()
    dry = run_here(project, "-n")
    assert "would convert clf:fp16" in dry.out and "clf:fp32" not in dry.out, dry.out
    assert "damaged" not in dry.out and run_here(project, "check", "clf:fp32").code == 0, dry.out


@pytest.mark.slow
def test_damaged_caches_and_pid_file_are_dropped_not_trusted(copy):
    def compose_entries(change):
        def damage(project):
            path = project.path(".tfbuild/compose-cache.json")
            cache = json.loads(path.read_text())
            path.write_text(json.dumps({key: change(value) for key, value in cache.items()}))
        return damage

    def write(relative, content):
        return lambda project: project.path(relative).write_bytes(content)

    def digests(change):
        def damage(project):
            path = project.path(".tfbuild/digests.json")
            path.write_text(json.dumps({key: change(value) for key, value in json.loads(path.read_text()).items()}))
        return damage

    damages = {
        "digests garbage": write(".tfbuild/digests.json", b"\xff\x00garbage"),
        "digests truncated": write(".tfbuild/digests.json", b'{"/x": [1, 2'),
        "digests a list": write(".tfbuild/digests.json", b"[[1, 2, 3, 4]]"),
        "digests entry a number": digests(lambda v: 7),
        "digests entry short": digests(lambda v: v[:2]),
        "digests entry a dict": digests(lambda v: {"digest": v[-1]}),
        "digests entry digest a number": digests(lambda v: v[:-1] + [0]),
        "compose garbage": write(".tfbuild/compose-cache.json", b"\x00\x01"),
        "compose empty": write(".tfbuild/compose-cache.json", b""),
        "compose a list": write(".tfbuild/compose-cache.json", b'["x"]'),
        "compose entry a list": compose_entries(lambda v: [v]),
        "compose entry without raw": compose_entries(lambda v: {"sha256": v["sha256"]}),
        "compose entry tampered": compose_entries(lambda v: {**v, "raw": {**v["raw"], "targets": {}}}),
        "compose entry old format": compose_entries(lambda v: v["raw"]),
        "pid garbage": write(".tfbuild/build.pid", b"\xff\xfe\x00"),
        "pid empty": write(".tfbuild/build.pid", b""),
    }
    for name, damage in damages.items():
        project = copy()
        damage(project)
        result = run_here(project)
        assert result.code == 0 and "all 2 target(s) up to date" in result.out, (name, result.text)


def test_pid_of_the_waited_for_build_is_shown_only_when_readable(tmp_path):
    from tfbuild.api import pid_in

    pid = tmp_path / "build.pid"
    for content, shown in ((b"1234\n", "1234"), (b"", "unknown"), (b"\xff\xfe", "unknown"), (b"12ab", "unknown")):
        pid.write_bytes(content)
        assert pid_in(pid) == shown
    assert pid_in(tmp_path / "missing") == "unknown"


@pytest.mark.slow
def test_an_output_rewritten_in_place_with_its_old_size_and_mtime_is_rebuilt(copy):
    for how in ("in place", "replaced"):
        project = copy()
        assert run_here(project).code == 0  # the digest cache now knows this copy's files
        output = project.path("build/clf/fp32/model.tflite")
        before = output.stat()
        data = bytearray(output.read_bytes())
        data[len(data) // 2] ^= 0xFF
        if how == "in place":  # cp -p / an editor keeping times: same inode, size and mtime
            with open(output, "r+b") as handle:
                handle.write(data)
        else:
            tmp = output.with_name("model.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, output)
        os.utime(output, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = output.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        dry = run_here(project, "-n")
        assert "would convert clf:fp32: build/clf/fp32/model.tflite was modified" in dry.out, (how, dry.out)
        assert "clf:fp16" not in dry.out, (how, dry.out)


def test_reading_a_lock_merges_the_sides_of_a_conflict(tmp_path):
    """The merge rules, without a build: diff3 style, one side unreadable, a newer lock."""
    from tfbuild.errors import UserError
    from tfbuild.lockfile import read_lock
    from tfbuild.project import Project as TfProject

    (tmp_path / "recipes").mkdir()
    project = TfProject.open(tmp_path, read_only=True)
    entry = {"key": "k", "inputs": {}, "versions": {}, "outputs": {}}

    def lock_text(**targets) -> list[str]:
        return (json.dumps({"lock_version": 1, "targets": targets}, indent=2, sort_keys=True) + "\n").splitlines(keepends=True)

    ours = lock_text(a=entry, b={**entry, "key": "ours"})
    theirs = lock_text(a=entry, b={**entry, "key": "theirs"}, c=entry)
    conflicted = "<<<<<<< HEAD\n" + "".join(ours) + "||||||| base\n{}\n=======\n" + "".join(theirs) + ">>>>>>> topic\n"
    project.lock_path.write_text(conflicted)
    lock = read_lock(project)
    assert str(lock.damage) == "line 1: merge conflict marker" and set(lock.targets) == {"a", "c"}

    project.lock_path.write_text("<<<<<<< HEAD\n" + "".join(ours) + "=======\n{\"lock_version\": \n>>>>>>> topic\n")
    assert set(read_lock(project).targets) == {"a", "b"}  # the readable side, whole

    project.lock_path.write_text("<<<<<<< HEAD\n" + "".join(ours) + ">>>>>>> topic\n")  # markers that do not nest
    assert read_lock(project).targets == {} and read_lock(project).damage.line == 1

    project.lock_path.write_text(json.dumps({"lock_version": 3, "targets": {}}, indent=2))
    with pytest.raises(UserError, match="lock_version 3 is from a newer tfbuild"):
        read_lock(project)
