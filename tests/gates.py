"""Synchronising a test with a build running in another process, without sleeping: a worker
blocks reading a FIFO until the test opens its writing end."""

from __future__ import annotations

import os
import threading

import pytest


def writer_when_blocked(gate, process):
    """Open the FIFO for writing: returns once a worker of `process` is blocked reading it. If the
    build ends without ever reaching the gate, a watcher opens the reading end so this returns,
    and the test fails with the build's output instead of hanging."""
    def release_if_build_ends():
        if process.wait() is not None and not opened.is_set():
            os.close(os.open(gate, os.O_RDONLY | os.O_NONBLOCK))

    opened = threading.Event()
    threading.Thread(target=release_if_build_ends, daemon=True).start()
    writer = open(gate, "w")
    opened.set()
    if process.poll() is not None:
        writer.close()
        pytest.fail("the build never reached the gate:\n" + "".join(process.communicate()))
    return writer
