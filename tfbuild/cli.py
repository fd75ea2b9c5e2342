"""`tfbuild`: make for .tflite files.

Exit codes: 0 everything built or up to date, 1 a target failed (or, for status/check, something
is out of date), 2 a user error (bad recipe, override, unknown target, missing file), 130 on
Ctrl-C. Nothing on the planning path imports TensorFlow.
"""

from __future__ import annotations

import argparse
import difflib
import gc
import json
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from tfbuild import __version__
from tfbuild import api
from tfbuild.api import classified, configured_cache, exclusive, split_args
from tfbuild.errors import UserError, machine_fault

COMMANDS = ("build", "list", "status", "explain", "check", "clean", "schema", "report", "cache", "diff")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfbuild",
        description="Build verified .tflite files and mobile loaders from Keras models, like make.",
        epilog="commands: build (default), list, status, explain TARGET, check, clean [TARGET], "
               "schema, report, cache status|push [TARGET], diff [REV] [TARGET]. TARGET is recipe, recipe:target or a glob ('*:int8'); "
               "KEY=VALUE, +KEY=VALUE and ~KEY are Hydra overrides.")
    parser.add_argument("command", nargs="?", default="build", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", metavar="TARGET|OVERRIDE")
    parser.add_argument("-C", "--directory", default=".", metavar="DIR", help="run in DIR, as make -C")
    parser.add_argument("-j", "--jobs", type=_positive, metavar="N",
                        help="recipes converted in parallel (default 1; with Ray, the cluster's CPUs)")
    parser.add_argument("-k", "--keep-going", action="store_true", help="keep building after a failure")
    parser.add_argument("-n", "--dry-run", action="store_true", help="say what would be built; change nothing")
    parser.add_argument("-B", "--always-make", action="store_true", help="rebuild the selected targets")
    parser.add_argument("-v", "--verbose", action="store_true", help="also list up-to-date targets")
    parser.add_argument("-o", "--output", metavar="FILE", help="report: where to write the HTML page")
    parser.add_argument("--cache", metavar="URL", help="shared cache: s3://bucket/prefix, gs://..., "
                        "file:///path or a folder (also TFBUILD_CACHE, or cache: in tfbuild.yaml)")
    parser.add_argument("--cache-mode", choices=("read", "read-write"), help="read-write (default) pushes what is built")
    parser.add_argument("--no-cache", action="store_true", help="do not use the shared cache in this run")
    parser.add_argument("--executor", metavar="local|ray[:ADDRESS]",
                        help="where conversions run: local worker processes (default), or tasks on a Ray "
                             "cluster (ADDRESS, else RAY_ADDRESS, else the cluster started on this machine)")
    parser.add_argument("--orphans", action="store_true",
                        help="clean: only what targets no recipe declares any more left behind")
    parser.add_argument("--format", choices=("table", "markdown", "json"), help="diff: how to show it (default table)")
    parser.add_argument("--fail-on", action="append", metavar="RULE",
                        help="diff: exit 1 when RULE fires (size:+5%%, top1_agreement:-0.005, verdict, removed; repeatable)")
    parser.add_argument("--version", action="version", version=f"tfbuild {__version__}")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: workers stopped, staging removed, finished targets kept."""


_SIGNALLED: list[int] = []  # SIGTERM seen, even if a library turned our exception into another


def _terminated(signum, frame):
    _SIGNALLED.append(signum)
    raise Terminated()


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of jobs, got {text!r}")
    return value


# Flags that only make sense for some commands; anywhere else they are a mistake, not ignored.
FLAG_COMMANDS = {"jobs": ("build",), "keep_going": ("build",), "always_make": ("build",),
                 "dry_run": ("build", "clean"), "output": ("report",), "cache": ("build", "cache"),
                 "cache_mode": ("build", "cache"), "no_cache": ("build",), "executor": ("build",),
                 "orphans": ("clean",), "format": ("diff",), "fail_on": ("diff",)}
FLAG_NAMES = {"jobs": "-j", "keep_going": "-k", "always_make": "-B", "dry_run": "-n", "output": "-o",
              "cache": "--cache", "cache_mode": "--cache-mode", "no_cache": "--no-cache", "executor": "--executor",
              "orphans": "--orphans", "format": "--format", "fail_on": "--fail-on"}
DEFAULTS = {"jobs": None, "keep_going": False, "always_make": False, "dry_run": False, "output": None,
            "cache": None, "cache_mode": None, "no_cache": False, "executor": None, "orphans": False,
            "format": None, "fail_on": None}


def _check_flags(options) -> None:
    for flag, commands in FLAG_COMMANDS.items():
        if getattr(options, flag) != DEFAULTS[flag] and options.command not in commands:
            raise UserError(f"{FLAG_NAMES[flag]} does not apply to `tfbuild {options.command}`",
                            expected=f"{FLAG_NAMES[flag]} with: {', '.join(commands)}")
    if options.command == "schema" and options.args:
        raise UserError("`tfbuild schema` takes no arguments")


def cmd_build(project, options) -> int:
    from tfbuild.api import BuildOptions, run_build
    from tfbuild.report import print_summary

    if options.dry_run:
        return _dry_run(project, options)
    result = run_build(project, BuildOptions(
        options.args, options.jobs, options.keep_going, options.always_make, options.verbose,
        options.cache, options.cache_mode, options.no_cache, options.executor))
    _print_lock_repair(result.lock_repair)
    if result.up_to_date:
        print(f"tfbuild: all {len(result.plans)} target(s) up to date ({result.seconds:.2f}s)")
        return 0
    print_summary(result.progress, result.outcomes, result.seconds)
    return result.exit_code


def _dry_run(project, options) -> int:
    from tfbuild import inputs_check

    plans, state = classified(project, *split_args(options.args), options.always_make)
    inputs_check.check_plans(project, plans)
    lock_problem = state.lock_problem()
    if lock_problem:
        print(f"would rewrite tfbuild.lock: it {lock_problem}")
    return _print_dry_run(plans)


def _print_lock_repair(problem: str | None) -> None:
    if problem:
        print(f"tfbuild.lock {problem}: rewritten from the build state")


def cmd_cache(project, options) -> int:
    """`cache status`: where each selected target's outputs are (local, remote, missing);
    `cache push`: upload the selected targets that are built and verified here (for CI)."""
    verb, *rest = options.args or ["status"]
    if verb not in ("status", "push"):
        raise UserError(f"unknown cache command {verb!r}", expected="tfbuild cache status|push [TARGET ...]")
    config = configured_cache(project, options)
    if config is None:
        raise UserError("no cache configured", expected="--cache URL, TFBUILD_CACHE=URL, or cache: {url: ...} "
                        "in tfbuild.yaml")
    if verb == "push" and not config.writes:
        raise UserError("cache mode is read: nothing may be pushed", key="--cache-mode", expected="read-write")
    from tfbuild.cache import RemoteCache
    from tfbuild.report import Progress

    remote = RemoteCache(config, Progress(0).warn)
    plans, state = classified(project, *split_args(rest))
    counts = {"local": 0, "remote": 0, "missing": 0, "pushed": 0}
    remote_bytes = 0
    for plan in plans:
        entry = state.get(plan.id) or {}
        local = plan.action == "none" and entry.get("verdict") == "passed"
        if verb == "push":
            files = [Path(rel).name for rel in entry.get("outputs", {})]
            pushed = local and remote.push(plan, plan.out_dir, files)
            counts["pushed"] += bool(pushed)
            print(f"{plan.id}: {'pushed' if pushed else 'not built and verified here: skipped' if not local else 'not pushed'}")
            continue
        found = remote.entry(plan)
        remote_bytes += remote.size(found) if found else 0
        where = [w for w, yes in (("local", local), ("remote", found is not None)) if yes] or ["missing"]
        for w in where:
            counts[w] += 1
        print(f"{plan.id}: {' + '.join(where)}")
    if verb == "push":
        print(f"pushed {counts['pushed']} of {len(plans)} target(s) to {config.url}")
        return 0 if not remote.off else 1
    print(f"{config.url}: {counts['remote']} of {len(plans)} target(s) remote ({remote_bytes / 1024:.1f} KiB), "
          f"{counts['local']} local, {counts['missing']} missing")
    return 1 if remote.off else 0


def _print_dry_run(plans) -> int:
    work = [p for p in plans if p.action != "none"]
    for plan in work:
        verb = {"convert": "would convert", "render": "would render loaders for",
                "rejected": "would report again (rejected)"}[plan.action]
        print(f"{verb} {plan.id}: {'; '.join(plan.reasons)}")
    print(f"{len(work)} of {len(plans)} target(s) out of date" if work else f"all {len(plans)} target(s) up to date")
    return 0


def cmd_status(project, options) -> int:
    from tfbuild.inputs_check import check_plans

    plans, _ = classified(project, *split_args(options.args))
    check_plans(project, plans)  # an input that is no model is why, too
    stale = [p for p in plans if p.action != "none"]
    for plan in plans:
        if plan.action == "none":
            if options.verbose:
                print(f"up to date  {plan.id}")
        else:
            print(f"{plan.action:<10}  {plan.id}: {'; '.join(plan.reasons)}")
    print(f"{len(stale)} of {len(plans)} target(s) out of date" if stale
          else f"all {len(plans)} target(s) up to date")
    if not split_args(options.args)[0]:  # every recipe was selected: what they do not declare is orphaned
        _print_orphans(project, _orphans(project, {plan.id for plan in plans}))
    return 1 if stale else 0


def _orphans(project, declared: set[str]) -> dict:
    """Outputs and rejected files of targets no recipe declares any more."""
    from tfbuild.state import BuildState

    return BuildState(project).orphans(declared)


def _print_orphans(project, orphans: dict) -> None:
    for target_id, files in orphans.items():
        print(f"orphan      {target_id}: no recipe declares it; {len(files)} file(s) left from its last "
              "build (`tfbuild clean --orphans` removes them)")


def cmd_explain(project, options) -> int:
    patterns, overrides = split_args(options.args)
    if not patterns:
        raise UserError("explain needs a target", expected="tfbuild explain recipe:target")
    from tfbuild.report import layer_lines

    plans, state = classified(project, patterns, overrides)
    for plan in plans:
        entry = state.get(plan.id)
        if plan.action == "none":
            print(f"{plan.id} is up to date (key {plan.key[:12]}, built {time.ctime((entry or {}).get('time', 0))})")
        else:
            verb = {"rejected": "was rejected, and its inputs have not changed since",
                    "convert": "needs to be converted", "render": "needs to render its loaders"}[plan.action]
            print(f"{plan.id} {verb}:")
            for reason in plan.reasons:
                print(f"  - {reason}")
        for line in layer_lines(_with_layers(project, plan, _shown_report(project, plan))):
            print(f"  {line}")
    return 0


def _with_layers(project, plan, report: dict | None) -> dict:
    """An up-to-date integer target's report with its per-layer figures, measured now (and
    cached under its key) when its build did not need them."""
    from tfbuild import analysis

    report = dict(report or {})
    if plan.action == "none" and report.get("layer_errors") is None:
        found = analysis.rows(project, plan, report)
        if found is not None:
            report["layer_errors"] = found
        elif analysis.missing(report):
            report["layer_errors_missing"] = analysis.missing(report)
    return report


def _shown_report(project, plan) -> dict | None:
    """The report that describes a target's current inputs: the rejected file's while the inputs
    are those it was rejected with, else the one beside the output."""
    from tfbuild.plan import REPORT_FILE

    if plan.action != "rejected":
        return plan.read_output(REPORT_FILE)
    try:
        value = json.loads((project.state_dir / "rejected" / plan.loaded.name / plan.name / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def cmd_check(project, options) -> int:
    from tfbuild.lockfile import check_lock, read_lock

    lock = read_lock(project)
    lock.require_sound()
    plans = api.plans(project, *split_args(options.args))
    bad = 0
    for plan in plans:
        reasons = check_lock(plan, lock)
        if reasons:
            bad += 1
            print(f"{plan.id}: {'; '.join(reasons)}")
    print(f"tfbuild.lock: {bad} of {len(plans)} target(s) do not match their inputs" if bad
          else f"tfbuild.lock matches all {len(plans)} target(s)")
    return 1 if bad else 0


def cmd_clean(project, options) -> int:
    """Delete what builds recorded as outputs (never other files), without needing the inputs.
    Without targets, also what targets no recipe declares any more left behind (`--orphans`:
    only that, as ninja's `-t cleandead`)."""
    from tfbuild.state import BuildState

    patterns, overrides = split_args(options.args)
    if options.orphans and patterns:
        raise UserError("`tfbuild clean --orphans` takes no target", expected="tfbuild clean --orphans")
    selected = project.select(patterns, overrides)
    declared = {f"{loaded.name}:{name}" for loaded, targets in selected for name in targets}
    orphans = _orphans(project, declared) if not patterns else {}
    if options.dry_run:
        state = BuildState(project)
        for files in orphans.values():
            for path in files:
                print(f"would remove {project.rel(path)}")
        for loaded, targets in ([] if options.orphans else selected):
            for name in targets:
                entry = state.get(f"{loaded.name}:{name}") or {}
                for rel in sorted({**entry.get("outputs", {}), **entry.get("loader_outputs", {})}):
                    print(f"would remove {rel}")
        return 0
    with exclusive(project):
        state = BuildState(project)
        lock_problem = state.lock_problem()  # reads the lock: a newer one stops us before any removal
        for target_id, files in orphans.items():
            _clean_target(project, state, target_id, [project.rel(p) for p in files])
        for loaded, targets in ([] if options.orphans else selected):
            for name in targets:
                target_id = f"{loaded.name}:{name}"
                entry = state.get(target_id) or {}
                _clean_target(project, state, target_id, {**entry.get("outputs", {}), **entry.get("loader_outputs", {})})
        state.save()
        _print_lock_repair(lock_problem)
    return 0


def _clean_target(project, state, target_id: str, recorded) -> None:
    """A target's recorded outputs and its rejected files, removed; its state forgotten."""
    from tfbuild.staging import remove_outputs

    recipe, _, name = target_id.partition(":")
    remove_outputs(project.root, [rel for rel in recorded if not rel.startswith(f"{project.rel(project.state_dir)}/")])
    shutil.rmtree(project.state_dir / "rejected" / recipe / name, ignore_errors=True)
    state.forget(target_id)
    print(f"cleaned {target_id} ({len(recorded)} file(s))")


def cmd_list(project, options) -> int:
    patterns, overrides = split_args(options.args)
    for loaded, targets in project.select(patterns, overrides):
        print(f"{loaded.name}  ({loaded.file}, model {loaded.recipe.model.source})")
        for name in targets:
            target = loaded.recipe.targets[name]
            extra = f", io {target.io}" if target.io != "float32" else ""
            extra += ", select TF ops" if target.select_tf_ops else ""
            print(f"  {loaded.name}:{name}  {target.quantize}{extra}")
    return 0


def cmd_schema(project, options) -> int:
    from tfbuild.recipe import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_report(project, options) -> int:
    from tfbuild.html_report import write_report

    plans, _ = classified(project, *split_args(options.args))
    reports = {plan.id: _shown_report(project, plan) for plan in plans}
    reports = {target: _with_layers(project, plan, reports[target]) if reports[target] else None
               for target, plan in ((p.id, p) for p in plans)}
    if not any(reports.values()):
        raise UserError("nothing built yet: no report.json to show", hint="run tfbuild first")
    path = Path(options.output) if options.output else project.root / "build" / "report.html"
    write_report(plans, path, reports)
    print(f"wrote {path}")
    return 0


def cmd_diff(project, options) -> int:
    from tfbuild.diff.command import run_diff

    return run_diff(project, options.args, options.format or "table", options.fail_on or [])


def main(argv: list[str] | None = None) -> int:
    from tfbuild.project import Project

    argv = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is threading.main_thread():
        if hasattr(signal, "SIGPIPE"):
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `tfbuild status | head` ends quietly, like make
        signal.signal(signal.SIGTERM, _terminated)  # a CI cancel cleans up like Ctrl-C
    options = _parser().parse_intermixed_args(argv)
    if options.command not in COMMANDS:
        options.args.insert(0, options.command)
        options.command = "build"
    try:
        _check_flags(options)
        if options.command == "schema":
            return cmd_schema(None, options)
        writes = options.command in ("build", "clean") and not options.dry_run
        project = Project.open(Path(options.directory), read_only=not writes)
        return globals()[f"cmd_{options.command}"](project, options)
    except UserError as err:
        if options.command == "build" and options.args and "no recipe matches" in err.message:
            close = difflib.get_close_matches(options.args[0], COMMANDS, n=1)
            err.hint = err.hint or (f"did you mean `tfbuild {close[0]}`?" if close else None)
        print(err.render(), file=sys.stderr)
        return 2
    except OSError as err:
        fault = machine_fault(err, options.directory)
        if fault is None:
            raise
        print(f"error: {fault}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print("interrupted: finished targets are kept; the next run rebuilds the rest", file=sys.stderr)
        return 143 if isinstance(interrupt, Terminated) or _SIGNALLED else 130


def run() -> None:
    """The process entry (the console script, `python -m tfbuild`): main, with a tenth of the
    full garbage collections, then exit without the interpreter's final ones.

    Hydra, pydantic and botocore leave some 100,000 long-lived objects (modules, schemas,
    service models), and each full collection walks them all: a cache pull spent 0.1 s in
    collections while importing them, and a quarter of a second collecting them at exit,
    longer than a no-op build takes to plan. Nothing at exit waits on a collection: files are
    closed where they are written, and atexit handlers still run. Not in main(): the tests
    call it in-process, and a frozen heap is never collected."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTIONS_EVERY)
    code = main()
    gc.freeze()
    raise SystemExit(code)


FULL_COLLECTIONS_EVERY = 100  # middle-generation collections between two full ones (Python: 10)
