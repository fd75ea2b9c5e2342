"""The local executor: a warm pool of spawned conversion workers.

Importing TensorFlow costs a worker ~3 s and ~560 MB before a sub-second conversion, so up to
`-j N` workers are kept and each runs job after job (a job is one recipe's selected targets).
Crash isolation stays: a worker that dies (segfault, OOM kill, os._exit) fails only the job it
was running and is dropped; the next job gets a new one. TensorFlow does not give back what a
conversion took, so a worker is retired after `MAX_JOBS` jobs or past `MAX_RSS_MB`.

Workers are spawned, never forked: the parent holds no TensorFlow state a fork would copy.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from tfbuild import jobs
from tfbuild.jobs import Event, JobSpec

MAX_JOBS = int(os.environ.get("TFBUILD_WORKER_MAX_JOBS", "16"))
MAX_RSS_MB = int(os.environ.get("TFBUILD_WORKER_MAX_RSS_MB", "3072"))
START_COST_S = 2.0  # a new worker's TensorFlow import on an idle core (bench_incremental c, bench_pool)


@dataclass
class Worker:
    process: Any  # multiprocessing's spawn Process
    connection: Any  # the parent's end of its duplex pipe
    warm_log: str | None = None
    jobs: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        try:
            with open(f"/proc/{self.pid}/status") as status:
                line = next(l for l in status if l.startswith("VmRSS:"))
            return int(line.split()[1]) / 1024
        except (OSError, StopIteration, ValueError):
            return 0.0  # not Linux: the job count alone retires workers


def start_worker(warm_log: str | None = None) -> Worker:
    """A spawned worker and the parent's end of its duplex pipe. With `warm_log` it imports
    TensorFlow at once (while the parent still plans); otherwise when its first job arrives."""
    from tfbuild import worker

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=True)
    process = context.Process(target=worker.main, args=(child, warm_log), daemon=True, name="tfbuild-worker")
    process.start()
    child.close()
    return Worker(process, parent, warm_log)


class WorkerPool:
    """The local executor. Like every executor it takes jobs (`submit`) and hands back each
    job's messages in the worker protocol (`events`), a job's last message being the one
    `jobs.ends_job` says ends it, or a `lost` message when its worker died."""

    ships_inputs = False  # its workers read the project's files where they are
    start_cost_s = START_COST_S

    def __init__(self, size: int, warm: list[Worker] | None = None):
        self.slots = size
        self.idle: list[Worker] = list(warm or [])
        self.busy: dict[Any, tuple[Worker, str]] = {}  # connection -> worker, job id
        self.said: list[tuple[str, Event]] = []  # messages of our own, handed out by the next events()

    def started(self) -> int:
        """Workers alive (busy, or idle and warm): a job for one of them costs no start."""
        return len(self.busy) + len(self.idle)

    def submit(self, job_id: str, payload: JobSpec, inputs: dict[str, Path]) -> str:
        """Send a job to an idle worker (started if none is idle); what the job is waiting for."""
        worker = self._send(payload)
        warm = worker.jobs > 0 or worker.warm_log is not None
        worker.jobs += 1
        self.busy[worker.connection] = (worker, job_id)
        self.said.append((job_id, jobs.where(f"local worker, pid {worker.pid}")))
        return "starting" if warm else "starting a worker (importing TensorFlow)"

    def _send(self, payload: JobSpec) -> Worker:
        """An idle worker that died while it waited (OOM killer, a stray signal) is replaced."""
        while self.idle:
            worker = self.idle.pop()
            try:
                worker.connection.send(payload)
                return worker
            except (OSError, ValueError):
                kill(worker)
        worker = start_worker()
        worker.connection.send(payload)
        return worker

    def events(self, timeout: float) -> list[tuple[str, Event]]:
        """Messages of every job that has some (waiting up to `timeout` for the first)."""
        said, self.said = self.said, []
        if not self.busy:
            return said
        sentinels = {w.process.sentinel: w for w, _ in self.busy.values()}
        found = wait(list(self.busy) + list(sentinels), timeout=0 if said else timeout)
        ready = {}
        for item in found:
            worker = self.busy[item][0] if item in self.busy else sentinels[item]
            ready[id(worker)] = worker
        out = said
        for worker in ready.values():
            out += self._drain(worker)
        return out

    def _drain(self, worker: Worker) -> list[tuple[str, Event]]:
        from tfbuild.jobs import ends_job

        job_id = self.busy[worker.connection][1]
        out: list[tuple[str, Event]] = []
        while True:
            try:
                if not worker.connection.poll():
                    if worker.process.is_alive():
                        return out
                    if not worker.connection.poll():
                        return out + [(job_id, self._lost(worker))]
                message = worker.connection.recv()
            except (EOFError, OSError):
                return out + [(job_id, self._lost(worker))]
            out.append((job_id, message))
            if ends_job(message):
                self.release(worker)
                return out

    def _lost(self, worker: Worker) -> Event:
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        self.discard(worker)
        how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exit code {code}")
        hint = " (out of memory?)" if code == -signal.SIGKILL else ""
        return jobs.lost(f"{how}{hint}")

    def release(self, worker: Worker) -> None:
        """The job is over: keep the worker for the next job, or retire it if it is worn."""
        self.busy.pop(worker.connection, None)
        if worker.jobs >= MAX_JOBS or worker.rss_mb() > MAX_RSS_MB:
            stop(worker)
        else:
            self.idle.append(worker)

    def discard(self, worker: Worker) -> None:
        """The worker died or must not be trusted with another job."""
        self.busy.pop(worker.connection, None)
        kill(worker)

    def shutdown(self) -> None:
        for worker in self.idle:  # one still importing TensorFlow for nothing is killed at once
            stop(worker) if worker.jobs else kill(worker)
        for worker, _ in list(self.busy.values()):
            kill(worker)
        self.idle, self.busy = [], {}


def stop(worker: Worker) -> None:
    """Ask a worker to leave after its job (it skips TensorFlow's teardown); kill a laggard."""
    try:
        worker.connection.send(None)
    except (OSError, ValueError):
        pass
    worker.process.join(timeout=10)
    kill(worker)


def kill(worker: Worker) -> None:
    if worker.process.is_alive():
        worker.process.kill()
    worker.process.join(timeout=10)
    worker.connection.close()
    if worker.warm_log and worker.jobs == 0:
        Path(worker.warm_log).unlink(missing_ok=True)
