"""The Ray executor: each job (one recipe's targets) is a Ray task on an existing cluster.

Same contract as the local pool (`pool.WorkerPool`): jobs in, the worker protocol's messages out;
promotion, state and lock stay in the parent. What differs is what a remote node cannot share:
- inputs travel by content: the files the job's keys hash (model, custom-object modules, data,
  `depends`, labels) go into Ray's object store once per build, however many jobs read them, and the
  task writes them into a private folder with the project's layout; nothing else of the project;
- outputs come back as bytes with their sha256, checked and written into this build's staging
  folder before the scheduler sees the `done` message, so promotion stays the same atomic rename;
- the task is a streaming generator, so phases reach the progress display as they happen (Ray
  Client cannot stream: there, a job's messages arrive when it is over);
- a job whose Ray worker or node died is submitted again here (up to `max_retries` times) with
  the targets it had not finished, rather than by Ray, whose generator retries drop messages by
  position and would lose or repeat a target's report if the second run said one note more;
- the node's versions of everything the keys name (TensorFlow, Keras, LiteRT, tfbuild, the
  packages custom objects come from) must be the parent's.

Ray workers are long-lived and run task after task, so TensorFlow is imported once per worker,
as in the local pool; `max_calls` recycles them after `pool.MAX_JOBS` jobs for the same reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

from pydantic import BaseModel, ConfigDict, Field

from tfbuild import jobs
from tfbuild.errors import UserError
from tfbuild.jobs import Event, JobSpec, ends_job
from tfbuild.project import PROJECT_FILE
from tfbuild.remote_jobs import RemoteJob, run_in_private_folder, shipped_files

EXTRA = "pip install 'tfbuild[ray]'"
A_CLUSTER = "a running cluster (`ray start --head`), then --executor ray:HOST:PORT, ray://HOST:PORT or RAY_ADDRESS"
AN_ADDRESS = "HOST:PORT, or ray://HOST:PORT for Ray Client"
CONNECT_TIMEOUT_S = 5.0


class RaySettings(BaseModel):
    """The `ray:` section of tfbuild.yaml: where the cluster is and what a job asks of it."""

    model_config = ConfigDict(extra="forbid")
    address: str | None = None  # --executor ray:ADDRESS and RAY_ADDRESS win; else the local cluster
    num_cpus: float = Field(1.0, gt=0)
    memory_mb: int = Field(2048, ge=0)  # a conversion: TensorFlow (~0.6 GB) plus the model
    max_retries: int = Field(1, ge=0)  # a job whose worker or node died runs once more
    runtime_env: dict | None = None  # e.g. {pip: [tfbuild==X, tensorflow==Y]} for bare clusters


def settings(root: Path, flag_address: str | None) -> RaySettings:
    from tfbuild.project import project_settings
    from tfbuild.recipe import validated

    section, file = project_settings(root, "ray")
    found = validated(RaySettings, section, file, prefix="ray")
    found.address = flag_address or os.environ.get("RAY_ADDRESS") or found.address or "auto"
    return found


class RayExecutor:
    ships_inputs = True  # the job's files, by their path in the project (run.job_inputs)
    start_cost_s = 0.0  # the cluster's workers are Ray's to start: every free slot is used

    def started(self) -> int:
        return self.slots

    def __init__(self, config: RaySettings, jobs: int | None, detail: Callable[[str], None]):
        ray = _import_ray()
        self.config = config
        where = _check_reachable(config.address)
        _quiet_cluster_messages(lambda text: detail(f"ray: {text}"))
        try:
            with _our_signal_handlers(), _neutral_cwd():
                ray.init(address=config.address, logging_level=logging.ERROR, log_to_driver=False,
                         namespace="tfbuild")
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(f"cannot connect to the Ray cluster at {config.address}: {_first_line(err)}",
                            expected=A_CLUSTER) from None
        from tfbuild.pool import MAX_JOBS

        cpus = _check_feasible(ray, config)
        self.slots = jobs or max(1, int(cpus // config.num_cpus))
        options = {"num_cpus": config.num_cpus, "memory": config.memory_mb << 20, "max_retries": 0}
        if config.runtime_env:
            options["runtime_env"] = config.runtime_env
        self.streaming = not config.address.startswith("ray://")
        task = ray.remote(max_calls=MAX_JOBS)(run_remote if self.streaming else run_remote_collected)
        self._task = task.options(**options)
        self._shipped: dict[Path, object] = {}  # file -> ObjectRef: a file recipes share travels once
        self.running: dict[object, RemoteJob] = {}  # the task's generator (or result) -> its job
        detail(f"ray: connected to {where}, {cpus:g} CPU(s); {self.slots} job(s) at a time")

    def submit(self, job_id: str, payload: JobSpec, inputs: dict[str, Path]) -> str:
        files = {rel: self._ship(path) for name, top in inputs.items() for rel, path in shipped_files(name, top)}
        Path(payload["log"]).write_text("running on the Ray cluster: the job's log replaces this when it ends\n")
        self._start(RemoteJob(job_id, payload, files))
        return "queued on the Ray cluster"

    def _start(self, job: RemoteJob) -> None:
        self.running[self._task.remote(job.remaining(), job.files)] = job

    def _ship(self, path: Path):
        import ray

        real = path.resolve()
        if real not in self._shipped:
            self._shipped[real] = ray.put(real.read_bytes())
        return self._shipped[real]

    def events(self, timeout: float) -> list[tuple[str, Event]]:
        import ray

        if not self.running:
            return []
        ready, rest = ray.wait(list(self.running), num_returns=1, timeout=timeout)
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        out: list[tuple[str, Event]] = []
        for handle in ready:
            out += self._drain(handle)
        return out

    def _drain(self, handle) -> list[tuple[str, Event]]:
        """Every message the task has sent so far; the job is forgotten after its last one."""
        import ray

        job = self.running[handle]
        out: list[tuple[str, Event]] = []
        try:
            for sent in self._available(handle):
                message = job.received(sent)
                if message is None:
                    continue
                out.append((job.job_id, message))
                if message["event"] == "lost" or ends_job(message):
                    del self.running[handle]
                    return out
        except ray.exceptions.RayError as err:
            del self.running[handle]
            out.append((job.job_id, self._retry_or_lose(job, err)))
        return out

    def _available(self, handle) -> Iterator[Event]:
        """The task's messages that have arrived: one by one from a generator task; all at
        once, when the task is over, through Ray Client."""
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
        yield jobs.lost("the Ray task ended without a result", worker_died=False)

    def _retry_or_lose(self, job: RemoteJob, err) -> Event:
        """A job whose worker or node died runs again (remote_jobs.RemoteJob.after_death);
        a task that failed otherwise is lost, with the cause."""
        import ray

        died = isinstance(err, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                                ray.exceptions.OutOfMemoryError))
        if not died:
            return jobs.lost(_lost_cause(err), worker_died=False)
        again, said = job.after_death(_lost_cause(err), self.config.max_retries)
        if again:
            self._start(job)
        return said

    def shutdown(self) -> None:
        import ray

        for handle in self.running:
            with contextlib.suppress(Exception):
                ray.cancel(handle, force=True)
        self.running = {}
        self._shipped = {}
        with contextlib.suppress(Exception):
            ray.shutdown()


def _lost_cause(err) -> str:
    import ray

    if isinstance(err, ray.exceptions.OutOfMemoryError):
        return "killed by Ray's memory monitor (out of memory? raise ray.memory_mb in tfbuild.yaml)"
    if isinstance(err, ray.exceptions.NodeDiedError):
        return "its Ray node died"
    if isinstance(err, ray.exceptions.WorkerCrashedError):
        return "the Ray worker process died"
    if isinstance(err, ray.exceptions.TaskCancelledError):
        return "the Ray task was cancelled"
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):  # a RayTaskError: what went wrong, not Ray's header
        return f"{type(cause).__name__}: {_first_line(cause)}"
    return _first_line(err)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray, which is not installed", expected=EXTRA) from None
    return ray


def _check_reachable(address: str) -> str:
    """Fail in seconds, not minutes (ray.init retries an unreachable address for a long time).
    Returns the address as shown to the user, with the HOST:PORT it stands for."""
    if address == "local":
        raise UserError("tfbuild uses a running Ray cluster; it does not start one", expected=A_CLUSTER)
    try:
        from ray._private.services import canonicalize_bootstrap_address

        bootstrap = (address.removeprefix("ray://") if address.startswith("ray://")
                     else canonicalize_bootstrap_address(address))
    except ValueError:
        raise UserError(f"not a Ray address: {address}", expected=AN_ADDRESS) from None
    except ConnectionError as err:
        raise UserError(f"no Ray cluster to connect to ({address}): {_first_line(err)}", expected=A_CLUSTER) from None
    except ImportError:  # Ray moved its helper: ray.init's own (slower) failure will do
        return address
    host, _, port = (bootstrap or "").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"not a Ray address: {address}", expected=AN_ADDRESS)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise UserError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}", expected=A_CLUSTER) from None
    return address if address.endswith(bootstrap) else f"{address} ({bootstrap})"


def _check_feasible(ray, config: RaySettings) -> float:
    """A job no node can take would wait in Ray's queue forever: say so now. The cluster's CPUs."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    fits = [r for r in nodes if r.get("CPU", 0) >= config.num_cpus and r.get("memory", 0) >= config.memory_mb << 20]
    if not fits:
        largest = max(nodes, key=lambda r: (r.get("CPU", 0), r.get("memory", 0)), default={})
        raise UserError(f"no node of the Ray cluster can take a job of {config.num_cpus:g} CPU(s) and "
                        f"{config.memory_mb} MiB (the largest has {largest.get('CPU', 0):g} CPU(s), "
                        f"{int(largest.get('memory', 0)) >> 20} MiB)", file=PROJECT_FILE, key="ray",
                        expected="ray.num_cpus and ray.memory_mb that fit a node")
    return sum(r.get("CPU", 0) for r in nodes)


@contextlib.contextmanager
def _our_signal_handlers():
    """ray.init installs its own SIGTERM/SIGINT handlers (log and exit); a build keeps its own:
    workers stopped, staging removed, finished targets kept, exit 143 or 130."""
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


@contextlib.contextmanager
def _neutral_cwd():
    """Ray puts the driver's working folder on every worker's import path: from a project
    folder, a cluster on this machine would import the live project instead of the shipped files."""
    cwd = os.getcwd()
    os.chdir(tempfile.gettempdir())
    try:
        yield
    finally:
        os.chdir(cwd)


def _quiet_cluster_messages(sink: Callable[[str], None]) -> None:
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


# ---------------------------------------------------------------- on the cluster


def run_remote(payload: JobSpec, files: dict) -> Iterator[Event]:
    """The Ray task: the job run in a private folder of a cluster node (remote_jobs), each event
    sent on as it happens, outputs attached as bytes."""
    import ray

    node = ray.util.get_node_ip_address()
    yield jobs.where(f"Ray node {node}, pid {os.getpid()}")
    yield from run_in_private_folder(payload, lambda: dict(zip(files, ray.get(list(files.values())))),
                                     f"Ray node {node}", "ray.runtime_env")


def run_remote_collected(payload: JobSpec, files: dict) -> list[Event]:
    """`run_remote` for Ray Client, which cannot stream a generator's values: all at the end."""
    return list(run_remote(payload, files))


