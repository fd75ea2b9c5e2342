"""Content digests with a stat cache.

A no-op build must not read a model of hundreds of megabytes to find it unchanged, so a file's
digest is reused while its (inode, size, mtime_ns, ctime_ns) are unchanged. A touch without a
change rehashes once and then finds the same digest, so it never causes a rebuild. The ctime is
what catches a file rewritten in place with its old size and mtime put back (`cp -p`, an editor
that preserves times): nobody can set a ctime, any write or utime() moves it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tfbuild.errors import UserError
from tfbuild.jsonfile import read_cache

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(value) -> str:
    return sha256_bytes(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_files(folder: Path) -> list[Path]:
    """The files a folder input is made of (a SavedModel), in a stable order: what its digest
    covers, and what a remote executor ships."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


class DigestCache:
    """Digests of files and directories, remembered by stat signature across runs."""

    def __init__(self, cache_file: Path | None, load_from: Path | None = None):
        """`cache_file` is where it is saved (None: never saved); `load_from` defaults to it."""
        self.cache_file = cache_file
        self.dirty = False
        source = load_from or cache_file
        self.entries: dict[str, list] = read_cache(source) if source is not None else {}

    def file(self, path: Path) -> str | None:
        """Digest of a file, or None if it does not exist."""
        try:
            st = os.stat(path)
            signature = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
            key = str(Path(path).resolve())
            cached = self.entries.get(key)
            if isinstance(cached, list) and cached[:-1] == signature and isinstance(cached[-1], str):
                return cached[-1]
            digest = _hash_file(path)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise UserError(f"cannot read {path}: {err.strerror}", file=str(path)) from None
        self.entries[key] = signature + [digest]
        self.dirty = True
        return digest

    def derived(self, path: Path, what: str, compute):
        """A small JSON value read from a file (`what`: its name, e.g. which Keras wrote a model),
        remembered like a digest: computed again only after the file's stat changes."""
        try:
            st = os.stat(path)
        except OSError:
            return compute()
        signature = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        key = f"{what}:{Path(path).resolve()}"
        cached = self.entries.get(key)
        if isinstance(cached, list) and len(cached) == len(signature) + 1 and cached[:-1] == signature:
            return cached[-1]
        value = compute()
        self.entries[key] = signature + [value]
        self.dirty = True
        return value

    def path(self, path: Path) -> str | None:
        """Digest of a file, or of a directory tree (names and contents), or None if missing."""
        path = Path(path)
        if path.is_dir():
            return sha256_json([[child.relative_to(path).as_posix(), self.file(child)] for child in tree_files(path)])
        return self.file(path)

    def save(self) -> None:
        if self.cache_file is None or not self.dirty:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_name(f".{self.cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.entries, separators=(",", ":")))
        os.replace(tmp, self.cache_file)
        self.dirty = False
