"""The build API: `tfbuild.build(...)` and the command line (`tfbuild`) both call `run_build`.

One build per project at a time (`exclusive`). Planning imports no TensorFlow; when every
selected target will be converted anyway (a first build, or `-B`) a worker starts importing
TensorFlow while planning goes on. Recipe mistakes and input files that are not what they claim
stop the build before any worker is used; a no-op build takes the fast path (no scheduler, no
worker machinery). The result says what happened; printing it is the caller's business.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tfbuild.errors import UserError
from tfbuild.project import Project

if TYPE_CHECKING:  # the scheduler and the state: imported when a build needs them
    from tfbuild.jobs import Executor
    from tfbuild.plan import TargetPlan
    from tfbuild.project import LoadedRecipe
    from tfbuild.run import Outcome
    from tfbuild.state import BuildState


Selection = list[tuple["LoadedRecipe", list[str]]]  # recipes and their selected targets (Project.select)


@dataclass
class BuildOptions:
    targets: list[str] = field(default_factory=list)  # recipe, recipe:target, globs, Hydra overrides
    jobs: int | None = None
    keep_going: bool = False
    always_make: bool = False
    verbose: bool = False
    cache: str | None = None  # URL; else TFBUILD_CACHE, else tfbuild.yaml
    cache_mode: str | None = None
    no_cache: bool = False
    executor: str | None = None  # local | ray[:ADDRESS]


@dataclass
class BuildResult:
    plans: list[TargetPlan]
    outcomes: list[Outcome]  # empty on the fast path (every target up to date)
    seconds: float
    progress: Any = None  # report.Progress, for the summary; None on the fast path
    lock_repair: str | None = None  # why tfbuild.lock was rewritten from the build state

    @property
    def up_to_date(self) -> bool:
        return self.progress is None

    @property
    def exit_code(self) -> int:
        from tfbuild.report import exit_code

        return exit_code(self.outcomes)


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Target patterns, and Hydra overrides (KEY=VALUE, +KEY=VALUE, ~KEY)."""
    overrides = [a for a in args if "=" in a or a.startswith("~")]
    return [a for a in args if a not in overrides], overrides


def plans(project: Project, patterns: list[str], overrides: list[str], selected: Selection | None = None) -> list[TargetPlan]:
    """Every selected target's plan: its inputs and key (no TensorFlow; nothing rebuilt)."""
    from tfbuild.loaders import template_files
    from tfbuild.plan import plan_recipe

    found: list[TargetPlan] = []
    for loaded, targets in selected or project.select(patterns, overrides):
        found += plan_recipe(project, loaded, targets, template_files(project, loaded))
    return found


def classified(project: Project, patterns: list[str], overrides: list[str], always: bool = False,
               selected: Selection | None = None) -> tuple[list[TargetPlan], BuildState]:
    """The plans, each with what a build would do and why (`action`, `reasons`)."""
    from tfbuild.state import BuildState, classify

    found = plans(project, patterns, overrides, selected)
    state = BuildState(project)
    for plan in found:
        classify(plan, state, always=always)
    return found, state


def run_build(project: Project, options: BuildOptions, say: Callable[[str], None] = print) -> BuildResult:
    """Build what is out of date among the selected targets. `say` gets the lines a build says
    besides its progress display (the state's repair, a cache warning before the display)."""
    from tfbuild import inputs_check

    patterns, overrides = split_args(options.targets)
    with exclusive(project):
        started = time.perf_counter()
        cache = configured_cache(project, options)
        remote = _remote(cache, say)
        selected = project.select(patterns, overrides)  # recipe mistakes surface before any worker
        everything = _converts_everything(project, options)
        reads_cache = remote is not None and not options.always_make  # the builder checks its misses
        if everything and not reads_cache:  # input files that are not what they claim, before the warm worker
            for loaded, _ in selected:
                inputs_check.check_recipe(project, loaded)
        ray = _ray_settings(project, options.executor)
        imports_tf = not all(loaded.recipe.model.torch for loaded, _ in selected)  # torch jobs never do
        warm = _warm_worker(project) if everything and imports_tf and cache is None and ray is None else []  # a cache may spare TF
        try:
            found, state = classified(project, patterns, overrides, options.always_make, selected)
            if not everything and not reads_cache:
                inputs_check.check_plans(project, found)
            lock_problem = state.lock_problem()  # reads the lock: a newer one stops us before any work
            state_note = state.damage_note()
            if state_note:
                say(state_note)
            if not warm and all(plan.action == "none" for plan in found):
                state.save_if_changed()  # the fast path: nothing to schedule, no worker machinery
                return BuildResult(found, [], time.perf_counter() - started, lock_repair=lock_problem)
            outcomes, progress = _schedule(project, options, found, state, warm, remote, ray)
            state.save_if_changed()  # when nothing landed (only old rejections), nothing wrote the lock
        finally:
            _release(warm)
        return BuildResult(found, outcomes, time.perf_counter() - started, progress, lock_problem)


def _schedule(project: Project, options: BuildOptions, found: list[TargetPlan], state: BuildState,
              warm: list[Any], remote: Any, ray: Any) -> tuple[list[Outcome], Any]:
    """Run the builder over the plans with the chosen executor, with a progress display."""
    from tfbuild.pool import WorkerPool
    from tfbuild.report import Progress
    from tfbuild.run import Builder, Options

    progress = Progress(len(found), verbose=options.verbose)
    if remote is not None:
        remote.warn = progress.warn
    try:
        executor: Executor = (_ray_executor(project, ray, options.jobs, found, progress) if ray is not None
                              else None) or WorkerPool(options.jobs or 1, warm)
        builder = Builder(project, state, progress, Options(
            options.keep_going, cache=remote, read_cache=not options.always_make,
            check_inputs=remote is not None and not options.always_make), executor)
        return builder.build(found), progress
    finally:
        progress.close()
        project.digests.save()


def configured_cache(project: Project, options: Any) -> Any:
    """The shared cache's configuration (from the flag, TFBUILD_CACHE or tfbuild.yaml), or None."""
    from tfbuild.cache import configure

    return configure(project.root, options.cache, options.cache_mode, getattr(options, "no_cache", False))


def _remote(config: Any, say: Callable[[str], None]) -> Any:
    if config is None:
        return None
    from tfbuild.cache import RemoteCache

    return RemoteCache(config, warn=lambda message: say(f"warning: {message}"))  # until progress exists


def _ray_settings(project: Project, executor: str | None) -> Any:
    """The Ray settings when `--executor ray[:ADDRESS]` is asked for, None for the local pool."""
    if executor in (None, "local"):
        return None
    kind, _, address = executor.partition(":")
    if executor.startswith("ray://"):  # a Ray Client address on its own
        address = executor
    elif kind != "ray":
        raise UserError(f"unknown executor {executor!r}", expected="--executor local, ray, ray:ADDRESS or ray://HOST:PORT")
    from tfbuild.ray_executor import settings

    return settings(project.root, address or None)


def _ray_executor(project: Project, settings: Any, jobs: int | None, found: list[TargetPlan],
                  progress: Any) -> Executor | None:
    """Connected before any work starts (an unreachable cluster, or an input it could not be
    sent, is exit 2 with nothing done), and only when something may be converted: a no-op or a
    pure re-render never talks to Ray."""
    converting = [plan for plan in found if plan.action == "convert"]
    if not converting:
        return None
    from tfbuild.ray_executor import RayExecutor
    from tfbuild.run import job_inputs

    job_inputs(project, converting)
    return RayExecutor(settings, jobs, progress.detail)


def _converts_everything(project: Project, options: BuildOptions) -> bool:
    """The project was never built here, or -B: every selected target will be converted."""
    return options.always_make or not (project.state_dir / "state.json").is_file()


def _warm_worker(project: Project) -> list[Any]:
    """Start importing TensorFlow in a worker while we plan, when conversion is certain anyway
    (`_converts_everything`). Otherwise planning decides first (a no-op stays light)."""
    from tfbuild.pool import start_worker

    return [start_worker(str(project.private_dir("logs") / f"warm-{os.getpid()}.log"))]


def _release(warm: list[Any]) -> None:
    """Warm workers the build did not adopt (planning failed, or nothing to do) are killed."""
    if warm:
        from tfbuild.pool import kill

        for worker in warm:
            kill(worker)


class exclusive:
    """One build (or clean) per project: a second one waits, and says who it waits for."""

    def __init__(self, project: Project):
        self.project = project

    def __enter__(self) -> "exclusive":
        from filelock import FileLock, Timeout

        self.project.state_dir.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(self.project.state_dir / "build.lock"))
        owner = self.project.state_dir / "build.pid"
        try:
            self.lock.acquire(timeout=0.2)
        except Timeout:
            print(f"waiting for another tfbuild in this project (pid {pid_in(owner)}) to finish...",
                  file=sys.stderr)
            self.lock.acquire()
        with contextlib.suppress(OSError):  # only ever shown to a build that waits: not worth failing for
            owner.write_text(str(os.getpid()))
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def pid_in(path: Path) -> str:
    """The pid a build wrote, or "unknown" (missing, or damaged: it is only ever shown)."""
    try:
        text = path.read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return "unknown"
    return text if text.isdigit() else "unknown"
