"""The Ray executor: each job (one recipe's targets) is a Ray task on an existing cluster.

Same contract as the local pool (`pool.WorkerPool`): jobs in, the worker protocol's messages out;
promotion, state and lock stay in the parent. What differs is what a remote node cannot share:
- inputs travel by content: the files the job's keys hash (model, custom-object modules, data,
  `depends`, labels) go into Ray's object store once per build, deduplicated by digest, and the
  task writes them into a private folder with the project's layout; nothing else of the project;
- outputs come back as bytes with their sha256, checked and written into this build's staging
  folder before the scheduler sees the `done` message, so promotion stays the same atomic rename;
- the task is a streaming generator, so phases reach the progress display as they happen;
- a job whose Ray worker or node died is submitted again here (up to `max_retries` times) with
  the targets it had not finished, rather than by Ray, whose generator retries drop messages by
  position and would lose or repeat a target's report if the second run said one note more;
- the node's tool versions must be the parent's: keys name the versions that made the outputs.

Ray workers are long-lived and run task after task, so TensorFlow is imported once per worker,
as in the local pool; `max_calls` recycles them after `pool.MAX_JOBS` jobs for the same reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import shutil
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from pydantic import BaseModel, ConfigDict, Field

from tfbuild.errors import UserError

EXTRA = "pip install 'tfbuild[ray]'"
CONNECT_TIMEOUT_S = 5.0
LOG_LIMIT = 1 << 20  # what a remote job's log may bring back


class RaySettings(BaseModel):
    """The `ray:` section of tfbuild.yaml: where the cluster is and what a job asks of it."""

    model_config = ConfigDict(extra="forbid")
    address: str | None = None  # else --executor ray:ADDRESS, RAY_ADDRESS, or the local cluster
    num_cpus: float = Field(1.0, gt=0)
    memory_mb: int = Field(2048, ge=0)  # a conversion: TensorFlow (~0.6 GB) plus the model
    max_retries: int = Field(1, ge=0)  # a job whose worker or node died runs once more elsewhere
    runtime_env: dict | None = None  # e.g. {pip: [tfbuild==X, tensorflow==Y]} for bare clusters


def settings(root: Path, flag_address: str | None) -> RaySettings:
    from tfbuild.project import project_settings
    from tfbuild.recipe import validated

    section, file = project_settings(root, "ray")
    found = validated(RaySettings, section, file, prefix="ray")
    found.address = flag_address or found.address or os.environ.get("RAY_ADDRESS") or "auto"
    return found


@dataclass
class RemoteJob:
    job_id: str
    payload: dict
    files: dict
    attempt: int = 1
    finished: set[str] = field(default_factory=set)  # targets whose report has arrived


class RayExecutor:
    name = "ray"

    def __init__(self, config: RaySettings, jobs: int | None, detail: Callable[[str], None]):
        ray = _import_ray()
        self.config = config
        self.detail = detail
        _check_reachable(config.address)
        _quiet_cluster_messages(ray, lambda text: self.detail(f"ray: {text}"))
        try:
            with _our_signal_handlers():
                ray.init(address=config.address, logging_level=logging.ERROR, log_to_driver=False,
                         namespace="tfbuild")
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(f"cannot connect to the Ray cluster at {config.address}: {_first_line(err)}",
                            expected="a running cluster: `ray start --head`, then --executor ray:HOST:PORT "
                                     "or RAY_ADDRESS") from None
        from tfbuild.pool import MAX_JOBS

        cpus = ray.cluster_resources().get("CPU", 1)
        self.slots = jobs or max(1, int(cpus // config.num_cpus))
        options = {"num_cpus": config.num_cpus, "memory": config.memory_mb << 20, "max_retries": 0}
        if config.runtime_env:
            options["runtime_env"] = config.runtime_env
        self.streaming = not config.address.startswith("ray://")
        self._task = ray.remote(max_calls=MAX_JOBS)(run_remote if self.streaming else run_remote_collected)
        self._task = self._task.options(**options)
        self._shipped: dict[str, object] = {}  # sha256 -> ObjectRef, so a file travels once
        self.running: dict[object, RemoteJob] = {}  # the task's generator (or result) -> its job
        detail(f"ray: connected to {config.address}, {cpus:g} CPU(s); {self.slots} job(s) at a time")

    def submit(self, job_id: str, payload: dict, inputs: dict[str, Path]) -> str:
        files = {rel: self._ship(path) for name, top in inputs.items() for rel, path in _files(name, top)}
        self._start(RemoteJob(job_id, payload, files))
        return "queued on the Ray cluster"

    def _start(self, job: RemoteJob) -> None:
        payload = {**job.payload, "targets": [t for t in job.payload["targets"] if t["name"] not in job.finished]}
        self.running[self._task.remote(payload, job.files)] = job

    def _ship(self, path: Path):
        import ray

        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self._shipped:
            self._shipped[digest] = ray.put(data)
        return self._shipped[digest]

    def events(self, timeout: float) -> list[tuple[str, dict]]:
        import ray

        if not self.running:
            return []
        pending = list(self.running)
        ready, rest = ray.wait(pending, num_returns=1, timeout=timeout)
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        out: list[tuple[str, dict]] = []
        for generator in ready:
            out += self._drain(generator)
        return out

    def _drain(self, handle) -> list[tuple[str, dict]]:
        """Every message the task has sent so far; the job is forgotten after its last one."""
        import ray

        from tfbuild.worker import ends_job

        job = self.running[handle]
        out = []
        try:
            for message in self._available(handle):
                message = _arrived(job.payload, message)
                if message.get("target") and message["event"] in ("done", "failed", "crashed"):
                    job.finished.add(message["target"])
                out.append((job.job_id, message))
                if message["event"] == "lost" or ends_job(message):
                    del self.running[handle]
                    return out
        except ray.exceptions.RayError as err:
            del self.running[handle]
            out.append((job.job_id, self._retry_or_lose(job, err)))
        return out

    def _available(self, handle) -> Iterator[dict]:
        """The task's messages that have arrived: streamed one by one from a generator task;
        all at once, when the task is over, through Ray Client (which cannot stream)."""
        import ray

        if not self.streaming:
            yield from ray.get(handle)
        else:
            while True:
                try:
                    yield ray.get(next(handle))
                except StopIteration:
                    break
                if not ray.wait([handle], timeout=0)[0]:
                    return
        yield {"event": "lost", "message": "the Ray task ended without a result"}

    def _retry_or_lose(self, job: RemoteJob, err) -> dict:
        """A job whose worker or node died runs again (the targets it had not finished), up to
        `max_retries` times; then it is lost, with the cause."""
        import ray

        cause = self._lost_cause(err)
        system = isinstance(err, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                                  ray.exceptions.OutOfMemoryError, ray.exceptions.ObjectLostError))
        if system and job.attempt <= self.config.max_retries:
            job.attempt += 1
            self._start(job)
            return {"event": "note", "message": f"{cause}; running the job again "
                                                f"(attempt {job.attempt} of {self.config.max_retries + 1})"}
        if system and job.attempt > 1:
            cause += f" (tried {job.attempt} times)"
        return {"event": "lost", "message": cause}

    def _lost_cause(self, err) -> str:
        import ray

        if isinstance(err, ray.exceptions.OutOfMemoryError):
            return "killed by Ray's memory monitor (out of memory? raise ray.memory_mb in tfbuild.yaml)"
        if isinstance(err, ray.exceptions.NodeDiedError):
            return "its Ray node died"
        if isinstance(err, ray.exceptions.WorkerCrashedError):
            return "the Ray worker process died"
        if isinstance(err, ray.exceptions.TaskCancelledError):
            return "the Ray task was cancelled"
        return f"the Ray task failed: {_first_line(err)}"

    def shutdown(self) -> None:
        import ray

        for generator in self.running:
            with contextlib.suppress(Exception):
                ray.cancel(generator, force=True)
        self.running = {}
        self._shipped = {}
        with contextlib.suppress(Exception):
            ray.shutdown()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray, which is not installed",
                        expected=EXTRA) from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes: ray.init retries an unreachable address for a long time."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        bootstrap = (address.removeprefix("ray://") if address.startswith("ray://")
                     else canonicalize_bootstrap_address(address))
    except (ConnectionError, ValueError) as err:
        raise UserError(f"no Ray cluster to connect to ({address}): {_first_line(err)}",
                        expected="a running cluster: `ray start --head`, then --executor ray:HOST:PORT "
                                 "or RAY_ADDRESS") from None
    except ImportError:  # Ray moved its helper: ray.init's own (slower) failure will do
        return
    host, _, port = (bootstrap or "").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as err:
        raise UserError(f"cannot reach the Ray cluster at {address}: {getattr(err, 'strerror', None) or err}",
                        expected="a running cluster: `ray start --head`, then --executor ray:HOST:PORT "
                                 "or RAY_ADDRESS") from None


@contextlib.contextmanager
def _our_signal_handlers():
    """ray.init installs its own SIGTERM/SIGINT handlers (log and exit 1); a build keeps its
    own: workers stopped, staging removed, finished targets kept, exit 143 or 130."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def _quiet_cluster_messages(ray, sink: Callable[[str], None]) -> None:
    """Ray prints its cluster's error messages (a worker died, a task is retried) straight to
    this process's stdout, through the progress display; they go to -v's details instead, and
    the build says what happened in its own words."""
    module = sys.modules.get("ray._private.worker")
    if module is not None and hasattr(module, "print_to_stdstream"):
        module.print_to_stdstream = lambda data, *args, **kwargs: [
            sink(line.splitlines()[0][:200]) for line in data.get("lines", []) if line.strip()]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _files(name: str, top: Path) -> Iterator[tuple[str, Path]]:
    """A job input by project-relative path; a folder input (a SavedModel) file by file."""
    if top.is_dir():
        for path in sorted(p for p in top.rglob("*") if p.is_file()):
            yield f"{name}/{path.relative_to(top).as_posix()}", path
    else:
        yield name, top


def _arrived(payload: dict, message: dict) -> dict:
    """Bring a remote message home: a target's files are checked and written into this build's
    staging folder (where the local executor's workers write them), the job's log into its log."""
    log = message.pop("log_text", None)
    if log is not None:
        Path(payload["log"]).write_text(log)
    if message["event"] == "done":
        result = message["result"]
        blobs, digests = result.pop("blobs"), result.pop("digests")
        stage = Path(next(t["stage"] for t in payload["targets"] if t["name"] == message["target"]))
        for name, data in blobs.items():
            if hashlib.sha256(data).hexdigest() != digests[name]:
                return {"event": "crashed", "target": message["target"], "stage": "bringing outputs back",
                        "message": f"{name} arrived damaged (sha256 mismatch)"}
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            (stage / name).write_bytes(data)
    return message


# ---------------------------------------------------------------- on the cluster


def run_remote(payload: dict, files: dict) -> Iterator[dict]:
    """The Ray task: the job's inputs laid out in a private folder, the job run there, each
    message sent on as it happens, outputs attached as bytes. Runs on a cluster node."""
    import ray

    yield {"event": "where", "where": f"Ray node {ray.util.get_node_ip_address()}, pid {os.getpid()}"}
    drift = _version_drift(payload)
    if drift:
        yield {"event": "user_error", "error": UserError(
            f"the Ray node {ray.util.get_node_ip_address()} has {drift}: its outputs would not match their keys",
            expected="the same versions on the cluster (the cluster's image, or ray.runtime_env in tfbuild.yaml)",
        ).to_dict()}
        return
    work = Path(tempfile.mkdtemp(prefix="tfbuild-job-"))
    try:
        for (rel, _), data in zip(files.items(), ray.get(list(files.values()))):
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_bytes(data)
        job = {**payload, "root": str(work), "log": str(work / ".tfbuild-job.log"),
               "targets": [{**t, "stage": str(work / ".tfbuild-stage" / t["name"])} for t in payload["targets"]]}
        yield from _streamed(job)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_remote_collected(payload: dict, files: dict) -> list[dict]:
    """`run_remote` for Ray Client, which cannot stream a generator's values: all at the end."""
    return list(run_remote(payload, files))


def _version_drift(payload: dict) -> str | None:
    from tfbuild.plan import tool_versions

    wanted, here = payload["targets"][0]["versions"], tool_versions()
    drift = [f"{tool} {here.get(tool, 'missing')} where this build has {wanted[tool]}"
             for tool in sorted(wanted) if here.get(tool) != wanted[tool]]
    return "; ".join(drift) or None


def _streamed(job: dict) -> Iterator[dict]:
    """Run the job in a thread of this worker and yield its messages as they come; the last
    one carries the job's log (TensorFlow's output, read once the job is over)."""
    from tfbuild.worker import ends_job, run_in_this_process

    messages: queue.Queue = queue.Queue()
    cwd = os.getcwd()

    def run() -> None:
        try:
            with _output_to(job["log"]):
                run_in_this_process(job, messages.put)
        finally:
            messages.put(None)

    thread = threading.Thread(target=run, name="tfbuild-job", daemon=True)
    thread.start()
    last = None
    while (message := messages.get()) is not None:
        if message["event"] == "done":
            _attach_outputs(message, job)
        if ends_job(message):
            last = message  # sent with the log, once the job has written all of it
            continue
        yield message
    thread.join()
    os.chdir(cwd)
    if last is not None:
        last["log_text"] = _tail(Path(job["log"]))
        yield last


def _attach_outputs(message: dict, job: dict) -> None:
    stage = Path(next(t["stage"] for t in job["targets"] if t["name"] == message["target"]))
    result = message["result"]
    result["blobs"] = {name: (stage / name).read_bytes() for name in result["files"]}
    result["digests"] = {name: hashlib.sha256(data).hexdigest() for name, data in result["blobs"].items()}


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
