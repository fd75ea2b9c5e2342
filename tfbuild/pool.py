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
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

MAX_JOBS = int(os.environ.get("TFBUILD_WORKER_MAX_JOBS", "16"))
MAX_RSS_MB = int(os.environ.get("TFBUILD_WORKER_MAX_RSS_MB", "3072"))


@dataclass
class Worker:
    process: object
    connection: object
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
    def __init__(self, size: int, warm: list[Worker] | None = None):
        self.size = size
        self.idle: list[Worker] = list(warm or [])
        self.busy: dict[object, Worker] = {}  # connection -> worker

    def submit(self, payload: dict) -> Worker:
        """Send a job to an idle worker (started if none is idle)."""
        worker = self.idle.pop() if self.idle else start_worker()
        worker.connection.send(payload)
        worker.jobs += 1
        self.busy[worker.connection] = worker
        return worker

    def ready(self, timeout: float) -> list[Worker]:
        """Busy workers with a message to read, or that died."""
        if not self.busy:
            return []
        sentinels = {w.process.sentinel: w for w in self.busy.values()}
        found = wait(list(self.busy) + list(sentinels), timeout=timeout)
        workers = {id(w): w for w in (self.busy.get(x) or sentinels.get(x) for x in found) if w is not None}
        return list(workers.values())

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
        for worker in list(self.busy.values()):
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
