"""The shared cache, against moto's S3 server on 127.0.0.1, each ratio measured within one run:

(a) a fresh clone pulling every shipped target from the cache against a clean local build of
    the same targets (aim: <= 0.15x, and no TensorFlow in the pulling process tree);
(b) a clean build that pushes every target against the same build without a cache
    (aim: <= 1.1x).

Usage: python bench/bench_remote_cache.py [runs]
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import ENV, copy_examples, measure, row, tfbuild

BUCKET = "bench-cache"


def start_s3() -> tuple[object, dict]:
    import logging

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**ENV, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    env.pop("TFBUILD_CACHE", None)
    s3fs.S3FileSystem(key="bench", secret="bench", endpoint_url=env["AWS_ENDPOINT_URL"]).mkdir(BUCKET)
    return server, env


def clean_clone(work: Path, name: str) -> Path:
    project = copy_examples(work / name)
    shutil.rmtree(project / "build", ignore_errors=True)
    shutil.rmtree(project / ".tfbuild", ignore_errors=True)
    return project


def main(runs: int) -> None:
    server, env = start_s3()
    local, pushing, pulling = [], [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for run in range(runs):
                url = f"s3://{BUCKET}/run{run}"
                local.append(measure(tfbuild("-C", str(clean_clone(work, "local"))), env=env)[0])
                pushing.append(measure(tfbuild("-C", str(clean_clone(work, "push")), "--cache", url), env=env)[0])
                puller = clean_clone(work, "pull")
                pulling.append(measure(tfbuild("-C", str(puller), "--cache", url), env=env)[0])
                logs = puller / ".tfbuild" / "logs"
                workers = sorted(p.name for p in logs.glob("*.log")) if logs.is_dir() else []
                if workers:
                    raise SystemExit(f"the pulling build started workers: {workers}")
    finally:
        server.stop()
    local_s, push_s, pull_s = (statistics.median(x) for x in (local, pushing, pulling))
    print(f"shipped examples, median of {runs} run(s), moto S3 on 127.0.0.1:")
    print(row("clean local build", local_s))
    print(row("clean build, pushing to the cache", push_s))
    print(row("fresh clone, pulling from the cache", pull_s))
    print(f"  pull / local build: {pull_s / local_s:.3f}x (aim <= 0.15x); no worker started")
    print(f"  push / local build: {push_s / local_s:.3f}x (aim <= 1.1x)")


if __name__ == "__main__":
    os.chdir(Path(__file__).parent)
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
