"""Whole-process measurements for the bench scripts: wall time and peak memory of a process
tree (parent + spawned workers, proportional set size summed, sampled from /proc), never timed inside a test."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# This sandbox sets PYTHONDONTWRITEBYTECODE=1, so every process would compile tfbuild's modules
# from source again (~0.06 s); a user's machine caches their bytecode after the first run.
# A shared cache from the user's environment would turn clean builds into pulls.
ENV = {key: value for key, value in os.environ.items() if key not in ("PYTHONDONTWRITEBYTECODE", "TFBUILD_CACHE")}
ENV["TF_CPP_MIN_LOG_LEVEL"] = "3"


def _tree_pss_kb(pid: int) -> int:
    """Proportional set size summed over the tree: shared pages (libpython, numpy, ...) mapped
    by both the parent and a worker count once, as they occupy memory once."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as rollup:
                total += next((int(l.split()[1]) for l in rollup if l.startswith("Pss:")), 0)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    stack += [int(c) for c in children.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def measure(command: list[str], cwd: Path | None = None, env: dict | None = None,
            sample_memory: bool = False) -> tuple[float, float | None]:
    """(seconds, peak MiB of the whole process tree or None) for one run; raises if it fails.

    Sampling /proc costs CPU on a 2-core machine, so timed runs do not sample: callers measure
    time and memory in separate runs."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    if sample_memory:
        while proc.poll() is None:
            peak = max(peak, _tree_pss_kb(proc.pid))
            time.sleep(0.02)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{out.decode()}\n{err.decode()}")
    return seconds, (peak / 1024 if sample_memory else None)


def median_seconds(runs: int, command: list[str], **kwargs) -> float:
    return statistics.median(measure(command, **kwargs)[0] for _ in range(runs))


def tfbuild(*args: str) -> list[str]:
    return [PYTHON, "-m", "tfbuild", *args]


def copy_examples(destination: Path) -> Path:
    """A fresh project with the shipped recipes and example models (no build outputs)."""
    shutil.rmtree(destination, ignore_errors=True)
    for folder in ("recipes", "examples"):
        shutil.copytree(REPO / folder, destination / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def row(label: str, seconds: float, mib: float | None = None) -> str:
    memory = f"{mib:8.0f} MiB" if mib is not None else ""
    return f"  {label:<44} {seconds:8.2f} s {memory}"
