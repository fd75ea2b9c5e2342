"""Staging and promotion: how outputs made anywhere reach their place atomically.

A worker, local or remote, writes a target's files into a staging folder of its build's run
beside the outputs (`build/<recipe>/.tfbuild-staging-<run>/<target>/`); outputs made elsewhere
(a cache, a remote node) are written there as a local worker would have (`write_staged`); the
scheduler then renames each file into place (`promote`, same filesystem: atomic). Executors and
the cache import this module, never the scheduler.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable


STAGING_PREFIX = ".tfbuild-staging-"


def remove_outputs(root: Path, relative_paths: Iterable[str]) -> None:
    """Delete recorded output files, then the folders they leave empty (never anything else)."""
    for rel in relative_paths:
        path = root / rel
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent == root or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()


def remove_staging(roots: set[Path], run_id: str) -> None:
    for root in roots:
        for stale in root.glob(f"{STAGING_PREFIX}{run_id}"):
            shutil.rmtree(stale, ignore_errors=True)


def write_staged(stage: Path, files: dict[str, bytes]) -> None:
    """Outputs that were made elsewhere (a cache, a remote worker), written into staging as a
    local worker would have written them."""
    for name, data in files.items():
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        (stage / name).write_bytes(data)


def promote(stage: Path, destination: Path, names: list[str]) -> list[Path]:
    """Rename staged files into place one by one (same filesystem: each rename is atomic)."""
    placed = []
    for name in names:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / name, target)
        placed.append(target)
    return placed
