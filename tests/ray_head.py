"""A real local Ray cluster for the tests and for bench/bench_ray.py: `ray start --head --block`
in its own process group, so that stopping it (SIGTERM to the group) touches no other Ray on the
machine, as `ray stop` would."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ray_head(client_port: int) -> tuple[subprocess.Popen, str]:
    temp = tempfile.mkdtemp(prefix="tfr-", dir="/tmp")
    head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--port=0",
                             "--num-cpus=2", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                             f"--ray-client-server-port={client_port}", "--disable-usage-stats",
                             f"--temp-dir={temp}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    said = []
    for line in head.stdout:  # until `ray start` says how to connect, i.e. the cluster is up
        said.append(line)
        found = re.search(r"--address='[^']*:(\d+)'", line)
        if found:
            threading.Thread(target=head.stdout.read, daemon=True).start()  # keep the pipe drained
            head.temp_dir = temp
            return head, f"127.0.0.1:{found.group(1)}"
    head.wait()
    raise RuntimeError("ray start --head failed:\n" + "".join(said))


def stop_ray_head(head: subprocess.Popen) -> None:
    os.killpg(head.pid, signal.SIGTERM)
    head.wait(timeout=120)
    shutil.rmtree(head.temp_dir, ignore_errors=True)
