"""The scheduler: jobs (one recipe's targets) to an executor, atomic promotion, then state and lock.

An executor (`pool.WorkerPool` here, `ray_executor.RayExecutor` on a cluster) runs jobs and hands
back their messages in the worker protocol (tfbuild/worker.py); staged files are on this disk when
a `done` message arrives. Everything that writes the project's outputs, state and lock is here.

Order of writes is the whole crash-safety story: a worker writes into a staging folder of its
run beside the outputs (`build/<recipe>/.tfbuild-staging-<run>/`), the parent renames each
finished file into `build/<recipe>/<target>/`, renders loaders the same way, and only then
records the target in the state and lock. Killed at any moment, the recorded digests no longer
match (or the key is not recorded), so the next run rebuilds exactly what was interrupted.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfbuild.conversion import modes
from tfbuild.errors import UserError, machine_fault
from tfbuild.jobs import Done, Event, Executor, Failed, JobSpec, TargetResult, TargetSpec
from tfbuild.plan import TargetPlan
from tfbuild.project import Project
from tfbuild.staging import STAGING_PREFIX, promote, remove_outputs, remove_staging, write_staged
from tfbuild.state import BuildState


@dataclass
class Outcome:
    plan: TargetPlan
    status: str  # built | cached | rendered | up-to-date | failed | crashed | rejected | skipped | error
    seconds: float = 0.0
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("built", "cached", "rendered", "up-to-date")


@dataclass
class Options:
    keep_going: bool = False
    cache: Any = None  # a cache.RemoteCache, or None
    read_cache: bool = True  # -B rebuilds locally (and still pushes)
    check_inputs: bool = False  # inputs_check what the cache does not have (the caller did not)


@dataclass
class Job:
    recipe: str
    plans: list[TargetPlan]
    started: dict[str, float] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    stage: str = "starting"  # what the worker said it was doing last, for a crash report


class Builder:
    def __init__(self, project: Project, state: BuildState, progress, options: Options, executor: Executor):
        self.executor = executor  # pool.WorkerPool, ray_executor.RayExecutor, or a test's fake
        self.project = project
        self.state = state
        self.progress = progress
        self.options = options
        self.outcomes: list[Outcome] = []
        self.stop_scheduling = False
        self.run_id = f"{os.getpid()}-{secrets.token_hex(4)}"

    # ------------------------------------------------------------ entry

    def build(self, plans: list[TargetPlan]) -> list[Outcome]:
        roots = {plan.out_dir.parent for plan in plans}
        remove_staging(roots, "*")  # left by a killed build; we hold the project lock
        jobs: dict[str, Job] = {}
        try:
            hits = self._cache_hits(plans)
            if self.options.check_inputs:
                self._check_inputs([plan for plan in plans if plan.id not in hits])
            for plan in plans:
                if plan.action == "none":
                    self._finish(Outcome(plan, "up-to-date"))
                elif plan.action == "rejected":  # from an earlier run: reported, not a new failure
                    self._finish(Outcome(plan, "rejected", messages=plan.reasons), new=False)
                elif plan.action == "render":
                    self._render_only(plan)
                elif plan.id in hits:
                    self._from_cache(plan, hits[plan.id])
                else:
                    jobs.setdefault(plan.loaded.name, Job(plan.loaded.name, [])).plans.append(plan)
            self._run_jobs(list(jobs.values()))
        finally:
            self.executor.shutdown()
            remove_staging(roots, self.run_id)
        return self.outcomes

    def _cache_hits(self, plans: list[TargetPlan]) -> dict[str, dict[str, bytes]]:
        """Targets to convert that someone already built with the same key (-B builds here)."""
        cache = self.options.cache
        wanted = [plan for plan in plans if plan.action == "convert"]
        if cache is None or not self.options.read_cache or not wanted:
            return {}
        self.progress.phase("cache", "cache", f"looking up {len(wanted)} target(s)")
        try:
            return cache.fetch_all(wanted)
        finally:
            self.progress.idle("cache")

    def _check_inputs(self, plans: list[TargetPlan]) -> None:
        """The input files of what is left to convert or render, checked as the planner checks
        them without a cache. A hit needs none of it: its key hashes those same files, and a
        model that is an LFS pointer or data that is a renamed CSV never built to be pushed
        (the check reads every array header, and a pull would import numpy for nothing)."""
        from tfbuild import inputs_check

        inputs_check.check_plans(self.project, plans)

    def _from_cache(self, plan: TargetPlan, files: dict[str, bytes]) -> None:
        """A cache hit, its digests already checked: staged and promoted exactly like a local
        build (no worker, no TensorFlow); loaders are rendered here."""
        started = time.perf_counter()
        write_staged(self._stage(plan), files)
        result: TargetResult = {"files": sorted(files), "verdict": "passed", "failures": [], "warnings": []}
        self._finish(self._land(plan, result, time.perf_counter() - started, status="cached"))

    def _stage(self, plan: TargetPlan) -> Path:
        """Staging beside the destination (same filesystem, so renames are atomic), one per run
        so that a straggler from a killed build can never write into this build's files."""
        return plan.out_dir.parent / f"{STAGING_PREFIX}{self.run_id}" / plan.name

    def _finish(self, outcome: Outcome, new: bool = True) -> None:
        self.outcomes.append(outcome)
        self.progress.finish(outcome)
        if new and not outcome.ok and not self.options.keep_going:
            self.stop_scheduling = True

    # ------------------------------------------------------------ workers

    def _run_jobs(self, queue: list[Job]) -> None:
        running: dict[str, Job] = {}  # recipe -> its job
        try:
            while queue or running:
                while queue and self._may_submit(queue, running) and not self.stop_scheduling:
                    job = queue.pop(0)
                    self._submit(job)
                    running[job.recipe] = job
                if self.stop_scheduling:
                    for job in queue:
                        for plan in job.plans:
                            self._finish(Outcome(plan, "skipped", messages=["not started: an earlier target failed (use -k)"]))
                    queue = []
                if not running:
                    break
                for recipe, message in self.executor.events(timeout=0.5):
                    if self._handle(running[recipe], message):
                        running.pop(recipe)
        except KeyboardInterrupt:
            self.executor.shutdown()
            raise

    def _may_submit(self, queue: list[Job], running: dict[str, Job]) -> bool:
        """A free slot, and a worker for it that pays: an executor whose workers cost time to start
        (the local pool: a TensorFlow import, ~3 s of CPU) starts one more only while the queued
        work is more than the running workers could finish in that time; a started worker
        takes job after job. So `-j N` is never slower than `-j1` on sub-second jobs."""
        if len(running) >= self.executor.slots:
            return False
        if not running or len(running) < self.executor.started():
            return True
        return worth_starting(sum(job_estimate(job.plans) for job in queue), len(running),
                              self.executor.start_cost_s, idle_cores())

    def _submit(self, job: Job) -> None:
        first = job.plans[0].loaded
        targets: list[TargetSpec] = [
            {"name": p.name, "recipe": job.recipe, "versions": _versions(p), "key": p.key,
             "stage": str(self._stage(p)), "float_fallback_before": _last_fallback(self.state, p)}
            for p in job.plans]
        payload: JobSpec = {
            "recipe": first.recipe.model_dump(), "file": first.file, "root": str(self.project.root),
            "log": str(self.project.private_dir("logs") / f"{job.recipe}.log"), "targets": targets,
            "version_inputs": {k: v for p in job.plans for k, v in p.inputs.items() if k.startswith("version:")},
        }
        job.pending = [p.name for p in job.plans]
        inputs = job_inputs(self.project, job.plans) if self.executor.ships_inputs else {}
        waiting = self.executor.submit(job.recipe, payload, inputs)
        self.progress.phase(job.recipe, job.recipe, waiting)

    def _plan(self, job: Job, name: str) -> TargetPlan:
        return next(p for p in job.plans if p.name == name)

    def _handle(self, job: Job, message: Event) -> bool:
        """Act on one event of a job (tfbuild.jobs); True when it was the job's last."""
        if message["event"] == "phase":
            target = message["target"]
            job.stage = message["phase"]
            self.progress.phase(job.recipe, f"{job.recipe}:{target}" if target else job.recipe, message["phase"])
        elif message["event"] == "note":
            self.progress.note(job.recipe, message["message"])
        elif message["event"] == "where":
            self.progress.detail(f"{job.recipe}: {message['where']}")
        elif message["event"] == "started":
            job.stage = "converting"
            job.started[message["target"]] = time.perf_counter()
            self.progress.start(self._plan(job, message["target"]))
        elif message["event"] == "done":
            plan = self._reported(job, message["target"])
            self._finish(self._land_or_fault(plan, message["result"], self._seconds(job, message)))
        elif message["event"] == "failed":
            self._failed(job, self._reported(job, message["target"]), message)
        elif message["event"] == "crashed":
            crash = [f"crashed while {message['stage']}: {message['message']}", f"log: {self._log(job)}"]
            if "target" not in message:
                self._fail_pending(job, "crashed", crash)
                return True
            self._finish(Outcome(self._reported(job, message["target"]), "crashed", messages=crash))
        elif message["event"] == "lost":  # the executor lost the job: its worker (or node) died, or the task failed
            how = "worker died" if message.get("worker_died", True) else "failed"
            self._fail_pending(job, "crashed", [f"{how} while {job.stage}: {message['message']}",
                                                f"log: {self._log(job)}"])
            return True
        elif message["event"] == "user_error":
            self._fail_pending(job, "error", [UserError.from_dict(message["error"]).render()])
            return True
        else:
            return message["event"] == "finished"
        return False

    def _reported(self, job: Job, name: str) -> TargetPlan:
        """The plan of a target whose report has arrived: no longer pending."""
        job.pending.remove(name)
        return self._plan(job, name)

    def _seconds(self, job: Job, message: Done | Failed) -> float:
        """The worker's own clock where it sent one (Ray Client delivers a job's messages at once)."""
        return message.get("seconds", time.perf_counter() - job.started.get(message["target"], time.perf_counter()))

    def _failed(self, job: Job, plan: TargetPlan, message: Failed) -> None:
        seconds = self._seconds(job, message)
        if message.get("machine_fault"):  # not these inputs' fault: the next run builds it again
            self._finish(Outcome(plan, "failed", seconds, [message["message"]]))
            return
        self.state.record(plan, verdict="failed", outputs=[], failures=[message["message"]])
        self.state.save()
        self._finish(Outcome(plan, "failed", seconds, [message["message"], f"log: {self._log(job)}"]))

    def _log(self, job: Job) -> str:
        return self.project.rel(self.project.state_dir / "logs" / f"{job.recipe}.log")

    def _fail_pending(self, job: Job, status: str, messages: list[str]) -> None:
        for name in list(job.pending):
            job.pending.remove(name)
            self._finish(Outcome(self._plan(job, name), status, messages=messages))

    # ------------------------------------------------------------ promotion

    def _land_or_fault(self, plan: TargetPlan, result: TargetResult, seconds: float) -> Outcome:
        """Promotion, or the machine's fault (a full disk, a read-only build folder) as a failed
        target that says so: what was in place stays, and the next run builds it again."""
        try:
            return self._land(plan, result, seconds)
        except OSError as err:
            fault = machine_fault(err, self.project.root)
            if fault is None:
                raise
            return Outcome(plan, "failed", seconds, [fault])

    def _land(self, plan: TargetPlan, result: TargetResult, seconds: float, status: str = "built") -> Outcome:
        from tfbuild import analysis

        stage = self._stage(plan)
        analysis.keep(self.project, plan, stage, result.get("private", []))
        if result["verdict"] == "rejected":
            kept = self.project.private_dir("rejected", plan.loaded.name, plan.name, empty=True)
            for name in result["files"]:
                shutil.move(stage / name, kept / name)  # may cross filesystems: not an output
            self.state.record(plan, verdict="rejected", outputs=[], failures=result["failures"])
            self.state.save()
            return Outcome(plan, "rejected", seconds, result["failures"] + [
                f"kept for inspection: {self.project.rel(kept / plan.target.output)}; "
                "the last good output is unchanged"], result["warnings"])
        previous = (self.state.get(plan.id) or {}).get("outputs") or {}
        outputs = promote(stage, plan.out_dir, result["files"])
        self._remove_stale(previous, outputs)
        try:
            loader_outputs = self._render(plan)
        except UserError as err:  # the model is good; record it, so the next run only re-renders
            self.state.record(plan, verdict="passed", outputs=outputs, failures=[], loader_outputs=None)
            self.state.save()
            return Outcome(plan, "error", seconds, [err.render()])
        self.state.record(plan, verdict="passed", outputs=outputs, failures=[], loader_outputs=loader_outputs)
        self.state.save()
        if status == "built" and self.options.cache is not None:
            self.options.cache.push(plan, plan.out_dir, result["files"])
        return Outcome(plan, status, seconds, [], result["warnings"])

    def _remove_stale(self, previous: dict[str, str], current: list[Path]) -> None:
        """Delete files an older build of this target made that this one did not (a renamed
        output, golden vectors a Flex model cannot have, loaders of a renamed class)."""
        keep = {self.project.rel(p) for p in current}
        remove_outputs(self.project.root, set(previous) - keep)

    def _render(self, plan: TargetPlan) -> list[Path] | None:
        """Render loaders (None when the recipe has no mobile section; old loaders are removed)."""
        from tfbuild.loaders import render_target

        written = []
        if plan.loader_key is not None:
            written = render_target(self.project, plan, self._stage(plan).with_name(f"{plan.name}-loaders"))
        self._remove_stale((self.state.get(plan.id) or {}).get("loader_outputs") or {}, written)
        return written if plan.loader_key is not None else None

    def _render_only(self, plan: TargetPlan) -> None:
        started = time.perf_counter()
        self.progress.start(plan)
        entry = self.state.get(plan.id) or {}  # a render-only plan has an entry: classify saw it
        outputs = [self.project.root / rel for rel in entry.get("outputs", {})]
        try:
            loader_outputs = self._render(plan)
        except UserError as err:
            self._finish(Outcome(plan, "error", messages=[err.render()]))
            return
        self.state.record(plan, verdict="passed", outputs=outputs, failures=[], loader_outputs=loader_outputs)
        self.state.save()
        self._finish(Outcome(plan, "rendered", time.perf_counter() - started))


def worth_starting(queued_s: float, running: int, start_cost_s: float, idle: float) -> bool:
    """Whether one more worker pays: the queued work outlasts what the running workers do while
    it starts, and a core is idle to run it (on a busy machine its start only slows the others)."""
    if not start_cost_s:
        return True
    return queued_s > running * start_cost_s and idle >= 0.5


def idle_cores() -> float:
    """Cores this process may use, less the threads running on the machine now (our own workers
    included, this one not): Linux's instantaneous count, else the 1-minute load average."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        with open("/proc/loadavg") as handle:
            running: float = int(handle.read().split()[3].split("/")[0]) - 1
    except (OSError, ValueError, IndexError):
        try:
            running = os.getloadavg()[0]
        except OSError:
            return float(cores)
    return cores - running


FIRST_BUILD_S = 0.6  # a small target's conversion and verification, when it was never built
FIRST_BUILD_S_PER_MB = 0.5  # more for a larger model file


SHARED_TIMINGS = ("load_s", "runtime_import_s", "reference_s")  # paid once per job, in every report


def job_estimate(plans: list[TargetPlan]) -> float:
    """Seconds a job (one recipe's targets) should take: each target's last build as its report
    times it (what the recipe's targets share counted once), else a guess from the model's size."""
    total, shared = 0.0, 0.0
    for plan in plans:
        timings = (plan.read_output("report.json") or {}).get("timings") or {}
        seconds = {k: v for k, v in timings.items() if isinstance(v, (int, float)) and k.endswith("_s")}
        own = sum(v for k, v in seconds.items() if k not in SHARED_TIMINGS)
        if not own:
            size = sum(p.stat().st_size for p in plan.input_paths.values() if p.is_file()) / 2 ** 20
            own = FIRST_BUILD_S + FIRST_BUILD_S_PER_MB * size
        total += own
        shared = max(shared, sum(v for k, v in seconds.items() if k in SHARED_TIMINGS))
    return total + shared


def job_inputs(project: Project, plans: list[TargetPlan]) -> dict[str, Path]:
    """The files a job reads (every file its targets' keys hash), by their path in the project
    as the recipe names it (a symlink inside the project stays a path inside it): what a remote
    executor ships, and nothing more. A file outside the project has no place on a remote node."""
    found: dict[str, Path] = {}
    for plan in plans:
        for path in plan.input_paths.values():
            relative = os.path.relpath(path, project.root)
            if relative == ".." or relative.startswith("../") or os.path.isabs(relative):
                raise UserError(f"{path} is outside the project: a remote executor ships the project's "
                                "files only", file=plan.loaded.file,
                                expected="inputs inside the project folder (a symlink inside it may point anywhere)")
            found[Path(relative).as_posix()] = path
    return dict(sorted(found.items()))


def _versions(plan: TargetPlan) -> dict[str, str | None]:
    """The versions a target's key names, as its report records them."""
    return {name.removeprefix("version:"): value for name, value in plan.inputs.items()
            if name.startswith("version:")}


def _last_fallback(state: BuildState, plan: TargetPlan) -> dict | None:
    """The float-fallback set the last passing build chose (an auto search resumes from it); read
    here, so that a worker, local or remote, never reads the project's state."""
    if not modes.mode(plan.target.quantize).float_fallback or plan.target.float_fallback != "auto":
        return None
    from tfbuild.fallback import recorded

    return recorded(state.get(plan.id), state.committed.targets.get(plan.id))
