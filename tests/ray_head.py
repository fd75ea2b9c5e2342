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


def start_ray_head(client_port: int, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """The head node (2 CPUs) and its GCS address. A short temp dir: Ray's socket paths must fit
    in 107 bytes."""
    temp = tempfile.mkdtemp(prefix="tfr-", dir="/tmp")
    head, said = _ray_start(["--head", "--port=0", "--num-cpus=2", "--include-dashboard=false",
                             f"--ray-client-server-port={client_port}", f"--temp-dir={temp}"],
                            ready=r"--address='[^']*:(\d+)'", env=env)
    head.temp_dir = temp
    return head, f"127.0.0.1:{said.group(1)}"


def start_ray_node(address: str, cpus: int) -> subprocess.Popen:
    """Another node of the cluster at `address`, on this machine: a node a test can kill."""
    node, _ = _ray_start([f"--address={address}", f"--num-cpus={cpus}"], ready=r"Ray runtime started")
    node.temp_dir = None
    return node


def _ray_start(args: list[str], ready: str, env: dict | None = None) -> tuple[subprocess.Popen, re.Match]:
    """`ray start --block ARGS`, returned once its output matches `ready`; its workers get `env`
    (default: this process's)."""
    process = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--block",
                                "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               env={**(env or os.environ), "RAY_USAGE_STATS_ENABLED": "0"})
    said = []
    for line in process.stdout:  # until `ray start` says the node is up
        said.append(line)
        found = re.search(ready, line)
        if found:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            return process, found
    process.wait()
    raise RuntimeError("ray start failed:\n" + "".join(said))


def stop_ray_node(head: subprocess.Popen) -> None:
    os.killpg(head.pid, signal.SIGTERM)
    head.wait(timeout=120)
    if head.temp_dir:
        shutil.rmtree(head.temp_dir, ignore_errors=True)
