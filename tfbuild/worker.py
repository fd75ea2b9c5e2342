"""Entry point of a conversion worker process (spawned, never forked).

Spawned so that the parent never holds TensorFlow state a fork would copy, and so that a
worker that segfaults or is killed by the OOM killer takes only its own job down. The worker's
stdout/stderr (the converter's MLIR dumps) go to a log file; the parent shows a short reason.
"""

from __future__ import annotations

import os
import sys
import traceback


def _redirect_output(log_path: str) -> None:
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(job: dict, connection) -> None:
    from tfbuild.errors import UserError

    _redirect_output(job["log"])
    sys.path.insert(0, job["root"])
    os.chdir(job["root"])

    def emit(message: dict) -> None:
        connection.send(message)

    try:
        from tfbuild.convert import run_job

        run_job(job, emit)
        emit({"event": "finished"})
    except UserError as err:
        emit({"event": "user_error", "error": err.to_dict()})
    except BaseException as err:  # a bug, or user code raising: keep the traceback in the log
        traceback.print_exc()
        emit({"event": "crashed", "message": f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"})
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        connection.close()
