"""The job contract between the scheduler (run.Builder) and whatever runs jobs (an `Executor`).

A job is one recipe's selected targets (`JobSpec`), sent to a worker as plain data (it crosses a
process pipe or the Ray object store). A worker answers with `Event`s, typed here and made by
the constructors below, in this order: any number of `phase` / `note` / `where`; per target
`started`, then `done`, `failed` or `crashed`; and one job-ending event (`ends_job`): `finished`,
`user_error`, or a `crashed` without a target. An executor that loses a job says `lost`.
Executors import this module and `staging`, never the scheduler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol, TypedDict, Union

from typing_extensions import NotRequired


class TargetSpec(TypedDict):
    name: str
    recipe: str
    versions: dict[str, str | None]  # tool versions the report records
    key: str
    stage: str  # the folder the worker writes this target's files into
    float_fallback_before: dict | None  # the set the last passing auto search chose


class JobSpec(TypedDict):
    recipe: dict  # the validated recipe, dumped
    file: str  # the recipe file, as shown to the user
    root: str  # the project folder (a remote executor replaces it with its own copy)
    log: str
    targets: list[TargetSpec]
    version_inputs: dict[str, str | None]  # "version:<dist>" the keys name: a remote node must match them


class TargetResult(TypedDict):
    files: list[str]  # in the target's stage folder: what ships
    verdict: str  # passed | rejected | unverified
    failures: list[str]
    warnings: list[str]
    timings: NotRequired[dict[str, float]]
    private: NotRequired[list[str]]  # analysis inputs kept under .tfbuild/, never shipped
    blobs: NotRequired[dict[str, bytes]]  # a remote worker's files, on their way home
    digests: NotRequired[dict[str, str]]


class Phase(TypedDict):
    event: Literal["phase"]
    target: str | None
    phase: str


class Note(TypedDict):
    event: Literal["note"]
    message: str


class Where(TypedDict):
    event: Literal["where"]
    where: str


class Started(TypedDict):
    event: Literal["started"]
    target: str


class Done(TypedDict):
    event: Literal["done"]
    target: str
    result: TargetResult
    seconds: float


class Failed(TypedDict):
    event: Literal["failed"]
    target: str
    message: str
    seconds: float
    machine_fault: NotRequired[bool]  # a full disk, a read-only folder: not the inputs' fault


class Crashed(TypedDict):
    event: Literal["crashed"]
    target: NotRequired[str]  # absent: the whole job crashed
    stage: str
    message: str


class Finished(TypedDict):
    event: Literal["finished"]
    log_text: NotRequired[str]  # a remote job's log, sent with its last event


class UserErrorEvent(TypedDict):
    event: Literal["user_error"]
    error: dict  # errors.UserError.to_dict()
    log_text: NotRequired[str]


class Lost(TypedDict):
    event: Literal["lost"]
    message: str
    worker_died: NotRequired[bool]


Event = Union[Phase, Note, Where, Started, Done, Failed, Crashed, Finished, UserErrorEvent, Lost]


def phase(target: str | None, what: str) -> Phase:
    return {"event": "phase", "target": target, "phase": what}


def note(message: str) -> Note:
    return {"event": "note", "message": message}


def where(text: str) -> Where:
    return {"event": "where", "where": text}


def started(target: str) -> Started:
    return {"event": "started", "target": target}


def done(target: str, result: TargetResult, seconds: float) -> Done:
    return {"event": "done", "target": target, "result": result, "seconds": seconds}


def failed(target: str, message: str, seconds: float, *, machine_fault: bool = False) -> Failed:
    event: Failed = {"event": "failed", "target": target, "message": message, "seconds": seconds}
    if machine_fault:
        event["machine_fault"] = True
    return event


def crashed(stage: str, message: str, target: str | None = None) -> Crashed:
    event: Crashed = {"event": "crashed", "stage": stage, "message": message}
    if target is not None:
        event["target"] = target
    return event


def finished() -> Finished:
    return {"event": "finished"}


def user_error(error: dict) -> UserErrorEvent:
    return {"event": "user_error", "error": error}


def lost(message: str, *, worker_died: bool = True) -> Lost:
    return {"event": "lost", "message": message, "worker_died": worker_died}


def ends_job(message: Event) -> bool:
    """The protocol's last message of a job: after it the worker is free for the next one."""
    event = message["event"]
    return event in ("finished", "user_error") or (event == "crashed" and "target" not in message)


class Executor(Protocol):
    """What runs jobs: the local pool (pool.WorkerPool), a Ray cluster (ray_executor.RayExecutor),
    or a test's fake. Staged files are on this disk when a `done` event is handed out."""

    slots: int  # jobs it runs at once
    ships_inputs: bool  # whether submit needs the job's input files (a remote executor)
    start_cost_s: float  # what starting one more worker costs (0: free, use every slot)

    def started(self) -> int:
        """Workers ready now: a job for one of them costs no start."""
        ...

    def submit(self, job_id: str, job: JobSpec, inputs: dict[str, Path]) -> str:
        """Take a job; returns what it waits for, for the progress display."""
        ...

    def events(self, timeout: float) -> list[tuple[str, Event]]:
        """Events of the jobs that have some (job id, event), waiting up to `timeout` for one."""
        ...

    def shutdown(self) -> None:
        ...


# What the worker is doing now, so that a crash (an exception from user code or TensorFlow, or a
# signal the parent sees) is reported with its stage instead of as a bare exception.
STAGE = {"now": "starting"}


def enter_stage(stage: str) -> None:
    STAGE["now"] = stage
