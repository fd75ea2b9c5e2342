"""What every remote executor does besides talking to its cluster: shipping a job's input files,
bringing its outputs home checked, running it on a node in a private folder, noticing version
drift, sweeping the folders of killed jobs, and the bookkeeping of retries.

Written for Ray (ray_executor.py); a Dask or Kubernetes executor is one module more that calls
these. The scheduler never sees any of it: it gets the worker protocol's events (tfbuild.jobs)
with the files already in its staging folder.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from tfbuild import jobs
from tfbuild.errors import UserError
from tfbuild.fingerprint import sha256_bytes, tree_files
from tfbuild.jobs import Event, JobSpec, ends_job
from tfbuild.project import PROJECT_FILE
from tfbuild.staging import write_staged

LOG_LIMIT = 1 << 20  # what a remote job's log may bring back
JOB_FOLDER = "tfbuild-job-"  # + the worker's pid, so that the next job can sweep a dead one's


@dataclass
class RemoteJob:
    job_id: str
    payload: JobSpec
    files: dict[str, Any]  # project-relative path -> how the executor ships its bytes
    attempt: int = 1
    finished: set[str] = field(default_factory=set)  # targets whose report has arrived
    said: set[str] = field(default_factory=set)  # notes shown already (a second attempt repeats them)

    def remaining(self) -> JobSpec:
        """The job as it runs again: only the targets whose report has not arrived."""
        return {**self.payload, "targets": [t for t in self.payload["targets"] if t["name"] not in self.finished]}

    def received(self, message: Event) -> Event | None:
        """An event from the remote worker, brought home (arrived); None for a note a second
        attempt repeats."""
        message = arrived(self.payload, message)
        if message["event"] in ("done", "failed", "crashed") and "target" in message:
            self.finished.add(str(message["target"]))
        if message["event"] == "note":
            if message["message"] in self.said:
                return None
            self.said.add(message["message"])
        return message

    def after_death(self, cause: str, max_retries: int) -> tuple[bool, Event]:
        """The job's worker or node died: whether to run it again (the targets it had not
        finished, up to `max_retries` more times), and what to say."""
        if all(t["name"] in self.finished for t in self.payload["targets"]):
            return False, jobs.finished()  # it died after its last report: nothing to run again
        if self.attempt <= max_retries:
            self.attempt += 1
            return True, jobs.note(f"{cause}; running the job again (attempt {self.attempt} of {max_retries + 1})")
        return False, jobs.lost(cause + (f" (tried {self.attempt} times)" if self.attempt > 1 else ""))


def shipped_files(name: str, top: Path) -> Iterator[tuple[str, Path]]:
    """A job input by project-relative path; a folder input (a SavedModel) file by file, the
    files its digest covers."""
    if top.is_dir():
        for path in tree_files(top):
            yield f"{name}/{path.relative_to(top).as_posix()}", path
    else:
        yield name, top


def arrived(payload: JobSpec, message: Event) -> Event:
    """Bring a remote message home: a target's files are checked and written into this build's
    staging folder (where the local executor's workers write them), the job's log into its log."""
    log = message.pop("log_text", None) if message["event"] in ("finished", "user_error") else None
    if log is not None:
        Path(payload["log"]).write_text(log)
    if message["event"] == "done":
        result = message["result"]
        blobs, digests = result.pop("blobs"), result.pop("digests")
        damaged = sorted(name for name, data in blobs.items() if sha256_bytes(data) != digests[name])
        if damaged:
            return {"event": "crashed", "target": message["target"], "stage": "bringing outputs back",
                    "message": f"{', '.join(damaged)} arrived damaged (sha256 mismatch)"}
        write_staged(Path(next(t["stage"] for t in payload["targets"] if t["name"] == message["target"])), blobs)
    return message


# ---------------------------------------------------------------- on a node


def run_in_private_folder(payload: JobSpec, fetch: Callable[[], dict[str, bytes]], where: str,
                          environment_key: str) -> Iterator[Event]:
    """The job run on this node: refused if this node's tool versions differ from the keys';
    otherwise its inputs laid out in a private folder with the project's layout, each event
    sent on as it happens, outputs attached as bytes."""
    drift = version_drift(payload["version_inputs"])
    if drift:
        yield jobs.user_error(UserError(
            f"the {where} has {drift}: its outputs would not match their keys",
            expected=f"the same versions on the cluster (its image, or {environment_key} in {PROJECT_FILE})",
        ).to_dict())
        return
    sweep_dead_job_folders()
    work = Path(tempfile.mkdtemp(prefix=f"{JOB_FOLDER}{os.getpid()}-"))
    try:
        for rel, data in fetch().items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_bytes(data)
        job: JobSpec = {**payload, "root": str(work), "log": str(work / ".tfbuild-job.log"),
                        "targets": [{**t, "stage": str(work / ".tfbuild-stage" / t["name"])} for t in payload["targets"]]}
        yield from streamed(job)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def version_drift(wanted: dict[str, str | None]) -> str | None:
    """What this node has that differs from the versions the job's keys name ("version:<x>")."""
    from importlib.metadata import PackageNotFoundError, version

    from tfbuild.plan import tool_versions

    here = {f"version:{tool}": value for tool, value in tool_versions().items()}
    drift = []
    for key, value in sorted(wanted.items()):
        if key not in here:
            try:
                here[key] = version(key.removeprefix("version:"))
            except PackageNotFoundError:
                here[key] = "missing"
        if here[key] != value:
            drift.append(f"{key.removeprefix('version:')} {here[key]} where this build has {value}")
    return "; ".join(drift) or None


def sweep_dead_job_folders() -> None:
    """A job folder whose Ray worker was killed (cancelled, crashed, out of memory) never ran its
    cleanup: the next job on the node removes it, so that model copies do not pile up."""
    for folder in Path(tempfile.gettempdir()).glob(f"{JOB_FOLDER}*-*"):
        pid = folder.name.removeprefix(JOB_FOLDER).split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def streamed(job: JobSpec) -> Iterator[Event]:
    """Run the job in a thread of this worker and yield its messages as they come; the last
    one carries the job's log (TensorFlow's output, read once the job is over). However this
    ends, the thread is waited for and the worker is left in a folder that will not vanish."""
    from tfbuild.worker import run_in_this_process

    messages: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            with _output_to(job["log"]):
                run_in_this_process(job, messages.put)
        finally:
            messages.put(None)

    thread = threading.Thread(target=run, name="tfbuild-job", daemon=True)
    thread.start()
    last = None
    try:
        while (message := messages.get()) is not None:
            if message["event"] == "done":
                _attach_outputs(message, job)
            if ends_job(message):
                last = message  # sent with the log, once the job has written all of it
                continue
            yield message
    finally:
        thread.join()
        os.chdir(tempfile.gettempdir())
    if last is not None:
        last["log_text"] = _tail(Path(job["log"]))
        yield last


def _attach_outputs(message: jobs.Done, job: JobSpec) -> None:
    stage = Path(next(t["stage"] for t in job["targets"] if t["name"] == message["target"]))
    result = message["result"]
    result["blobs"] = {name: (stage / name).read_bytes() for name in result["files"] + result.get("private", [])}
    result["digests"] = {name: sha256_bytes(data) for name, data in result["blobs"].items()}


@contextlib.contextmanager
def _output_to(log: str):
    """The job's stdout/stderr (the converter's MLIR dumps) into its log, then back to Ray's."""
    from tfbuild.worker import redirect_output

    saved = os.dup(1), os.dup(2)
    try:
        redirect_output(log)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-LOG_LIMIT:].decode("utf-8", "replace")
