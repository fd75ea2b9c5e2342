"""The Ray executor against the local warm pool, measured within one run:

a clean build of the 20 single-target recipes of bench_pool.py with `--executor ray` on a local
2-CPU Ray cluster (started here with `ray start --head`, not timed) against `-j2` with the local
pool (aim: <= 1.5x), outputs compared byte for byte. Ray gives each driver (each build) its own
worker processes, so every Ray build imports TensorFlow in its workers, as the local pool does.

Usage: python bench/bench_ray.py [runs]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_pool import RECIPES, project
from common import ENV, PYTHON, measure, row, tfbuild


def start_cluster(temp: str) -> str:
    ray = str(Path(PYTHON).with_name("ray"))
    subprocess.run([ray, "start", "--head", "--port=0", "--num-cpus=2", "--node-ip-address=127.0.0.1",
                    "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                   check=True, capture_output=True, env={**ENV, "RAY_USAGE_STATS_ENABLED": "0"})
    return "127.0.0.1:" + (Path(temp) / "ray_current_cluster").read_text().strip().rpartition(":")[2]


def stop_cluster() -> None:
    subprocess.run([str(Path(PYTHON).with_name("ray")), "stop", "--force"], capture_output=True)


def tflites(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob("build/*/*/model.tflite"))}


def main(runs: int) -> None:
    temp = tempfile.mkdtemp(prefix="tfr-", dir="/tmp")  # Ray's socket paths must stay short
    address = start_cluster(temp)
    local, remote = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for _ in range(runs):
                local.append(measure(tfbuild("-C", str(project(work / "local")), "-j2"))[0])
                remote.append(measure(tfbuild("-C", str(project(work / "ray")), "--executor", f"ray:{address}"))[0])
                if tflites(work / "local") != tflites(work / "ray") or len(tflites(work / "ray")) != RECIPES:
                    raise SystemExit("the Ray build's .tflite files differ from the local build's")
    finally:
        stop_cluster()
        shutil.rmtree(temp, ignore_errors=True)
    pool, ray = statistics.median(local), statistics.median(remote)
    print(f"{RECIPES} single-target recipes, clean builds, local 2-CPU Ray cluster, median of {runs} run(s):")
    print(row("tfbuild -j2 (local warm pool)", pool))
    print(row("tfbuild --executor ray", ray))
    print(f"  ray / local pool: {ray / pool:.2f}x (aim <= 1.5x); .tflite files identical in every run")


if __name__ == "__main__":
    os.chdir(Path(__file__).parent)
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
