"""The Ray executor against the local warm pool, measured within one run:

a clean build of the 20 single-target recipes of bench_pool.py with `--executor ray` on a local
2-CPU Ray cluster (started here with `ray start --head`, not timed) against `-j2` with the local
pool (aim: <= 1.5x), outputs compared byte for byte. Ray gives each driver (each build) its own
worker processes, so every Ray build imports TensorFlow in its workers, as the local pool does.

Usage: python bench/bench_ray.py [runs]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench_pool import RECIPES, project
from common import ENV, REPO, measure, row, tfbuild

sys.path.insert(0, str(REPO / "tests"))
from ray_head import free_port, start_ray_head, stop_ray_node  # noqa: E402 (the tests' own cluster)


def tflites(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob("build/*/*/model.tflite"))}


def main(runs: int) -> None:
    head, address = start_ray_head(free_port(), env=ENV)  # Ray's workers run as the local pool's do
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
        stop_ray_node(head)
    pool, ray = statistics.median(local), statistics.median(remote)
    print(f"{RECIPES} single-target recipes, clean builds, local 2-CPU Ray cluster, median of {runs} run(s):")
    print(row("tfbuild -j2 (local warm pool)", pool))
    print(row("tfbuild --executor ray", ray))
    print(f"  ray / local pool: {ray / pool:.2f}x (aim <= 1.5x); .tflite files identical in every run")


if __name__ == "__main__":
    os.chdir(Path(__file__).parent)
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
