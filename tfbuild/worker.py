"""Entry point of a conversion worker process (spawned, never forked).

Spawned so that the parent never holds TensorFlow state a fork would copy, and so that a
worker that segfaults or is killed by the OOM killer takes only its own job down. The worker's
stdout/stderr (the converter's MLIR dumps) go to a log file; the parent shows a short reason.

A worker can be started *warm*: it imports TensorFlow while the parent is still planning, and
then waits for its job. The parent does that only when conversion work is certain (first build
of a project, or -B), so a no-op build still never imports TensorFlow anywhere.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from tfbuild.jobs import Event, JobSpec


def redirect_output(log_path: str) -> None:
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _die_with_parent() -> None:
    """Linux: be killed when the parent dies, so no straggler outlives a killed build."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass  # elsewhere the per-run staging directory still keeps stragglers out


def main(connection, warm_log: str | None = None) -> None:
    """Run jobs until the parent sends None (or goes away). A worker of the pool imports
    TensorFlow once and converts recipe after recipe; the parent recycles it after a number of
    jobs or past a memory ceiling, since TensorFlow does not give back what a conversion took."""
    _die_with_parent()
    if warm_log is not None:
        redirect_output(warm_log)
        from tfbuild.conversion.tf import warm_up

        warm_up()  # TensorFlow and Keras, imported while the parent plans
    first = True
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):
            job = None
        if job is None:
            break
        if first and warm_log is not None:
            os.replace(warm_log, job["log"])  # what the warm-up printed belongs to the first job
        else:
            redirect_output(job["log"])
        first = False
        run_in_this_process(job, connection.send, forget_modules=False)  # one project: keep its modules
    sys.stdout.flush()
    sys.stderr.flush()
    connection.close()
    _release_semaphores()
    # Everything is written and reported: skip TensorFlow's slow interpreter teardown.
    os._exit(0)


def _release_semaphores() -> None:
    """Semaphores a job's libraries made (torch's and jax's multiprocessing locks) are released
    as a normal exit would: skipped by os._exit, the resource tracker this process shares with
    the build would print a "leaked semaphore" warning under the build's summary."""
    from multiprocessing import util

    util._run_finalizers(0)  # type: ignore[attr-defined]  # what a normal exit runs


def run_in_this_process(job: JobSpec, emit: Callable[[Event], None], *, forget_modules: bool = True) -> None:
    """Run one job here and report through `emit`, whatever happens. The job's project modules
    are importable while it runs; with `forget_modules` they are forgotten afterwards, so that a
    process whose jobs come from different folders (a Ray worker) never uses another job's copy
    of a module. The local pool's jobs share one project, whose modules may register things
    with TensorFlow when imported, which cannot be done twice."""
    from tfbuild import jobs
    from tfbuild.errors import UserError

    root = job["root"]
    before = set(sys.modules)
    sys.path.insert(0, root)
    os.chdir(root)
    _fresh_keras_names()
    try:
        from tfbuild.conversion.job import run_job

        run_job(job, emit)
        emit(jobs.finished())
    except UserError as err:
        emit(jobs.user_error(err.to_dict()))
    except Exception as err:  # a bug, or user code raising: keep the traceback in the log
        from tfbuild.errors import describe_exception

        traceback.print_exc()
        emit(jobs.crashed(jobs.STAGE["now"], describe_exception(err)))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        while root in sys.path:
            sys.path.remove(root)
        if forget_modules:
            _forget_job_modules(root, before)


def _forget_job_modules(root: str, before: set[str]) -> None:
    """Forget the modules the job imported from its project (packages and modules at the
    project's top level, and everything under them). Not tfbuild's own, even when it is installed
    from inside the project (an editable checkout), and nothing found elsewhere on the path, even
    when it lies inside the project (a virtualenv in `.venv/`)."""
    real_root = os.path.realpath(root)
    tops = {name.partition(".")[0] for name in set(sys.modules) - before} - {"tfbuild"}
    for top in [t for t in tops if _lives_at_top_of(sys.modules.get(t), real_root)]:
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]


def _lives_at_top_of(module, real_root: str) -> bool:
    places = list(getattr(module, "__path__", None) or []) or [getattr(module, "__file__", None) or ""]
    return any(place and os.path.dirname(os.path.realpath(place)) == real_root for place in places)


def _fresh_keras_names() -> None:
    """Keras numbers unnamed layers per process (`dense`, `dense_1`, ...): a model a py: factory
    builds must get the same names (and so the same output names) whichever jobs ran before."""
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
