"""A shared cache of built targets on any fsspec filesystem: S3, GCS, Azure, a shared folder.

A target's outputs are a pure function of its key (a hash of every input), so a target built
once, by CI or a teammate, never needs converting again. The layout is content-addressed, like
Bazel's action cache and CAS, under a version prefix so a future format can live beside it:

    <url>/v1/ac/<key>.json         the entry: target id, {file name: sha256}, tfbuild version,
                                   and an HMAC-SHA256 of all that when TFBUILD_CACHE_KEY is set
    <url>/v1/cas/<ab>/<sha256>     the blobs, stored once whoever wrote them

Writers put the blobs first and the entry last, so a reader never sees an entry whose blobs
were never written; concurrent writers of one key write the same bytes. Readers check every
blob's digest (and the signature, when they hold the key) before anything is staged, and never
promote what does not match. Only verified targets are pushed. Loaders are not cached: they are
rendered locally from the cached report, since templates may differ between clones.

A cache that cannot be reached is a warning, once; the build goes on locally, exit code unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from tfbuild import __version__
from tfbuild.errors import UserError
from tfbuild.fingerprint import sha256_bytes
from tfbuild.project import PROJECT_FILE, project_settings

LAYOUT = "v1"
MODES = ("read", "read-write")
ENV_URL = "TFBUILD_CACHE"
ENV_SECRET = "TFBUILD_CACHE_KEY"
# S3 fails fast (a dead endpoint must not stall the build) and makes one GET per object:
# s3fs otherwise asks each object's size first (a HEAD), to fetch one over 50 MiB in ranges
# over several connections. Entries are a few hundred bytes and blobs rarely that large (one
# that is comes in one stream); a pull of the examples made 64 requests instead of 32.
S3_OPTIONS = {"config_kwargs": {"connect_timeout": 3, "read_timeout": 10, "retries": {"max_attempts": 2}},
              "max_concurrency": 1}


@dataclass(frozen=True)
class CacheConfig:
    url: str
    mode: str = "read-write"
    secret: bytes | None = None

    @property
    def writes(self) -> bool:
        return self.mode == "read-write"


def configure(root: Path, url: str | None, mode: str | None, disabled: bool) -> CacheConfig | None:
    """The cache for this run: `--cache` wins over `TFBUILD_CACHE`, which wins over the project
    file's `cache:` section; `--no-cache` turns it off. Credentials never come from here: S3 reads
    the standard AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)."""
    if disabled:
        return None
    section = _project_section(root)
    url = url or os.environ.get(ENV_URL) or section.get("url")
    if not url:
        return None
    mode = mode or section.get("mode") or "read-write"
    if mode not in MODES:
        raise UserError(f"unknown cache mode {mode!r}", file=PROJECT_FILE, key="cache.mode",
                        expected=" or ".join(MODES))
    secret = os.environ.get(ENV_SECRET)
    return CacheConfig(url=str(url), mode=mode, secret=secret.encode() if secret else None)


def _project_section(root: Path) -> dict:
    section, _ = project_settings(root, "cache")
    if set(section) - {"url", "mode"}:
        raise UserError("the cache section must be a mapping with `url` and optional `mode`",
                        file=PROJECT_FILE, key="cache", expected="cache: {url: s3://bucket/prefix, mode: read}")
    return section


class RemoteCache:
    """Lookups and uploads for one build; after the first fault it stays quiet and off."""

    def __init__(self, config: CacheConfig, warn):
        self.config = config
        self.warn = warn
        self.off = False
        self._fs = None
        self._root = ""

    # ------------------------------------------------------------ plumbing

    def _filesystem(self):
        if self._fs is None:
            import fsspec

            protocol = fsspec.utils.get_protocol(self.config.url)
            options = S3_OPTIONS if protocol in ("s3", "s3a") else {}
            self._fs, self._root = fsspec.core.url_to_fs(self.config.url, **options)
            self._root = self._root.rstrip("/")
        return self._fs

    def _entry_path(self, key: str) -> str:
        return f"{self._root}/{LAYOUT}/ac/{key}.json"

    def _blob_path(self, digest: str) -> str:
        return f"{self._root}/{LAYOUT}/cas/{digest[:2]}/{digest}"

    def _fault(self, what: str, err: Exception) -> None:
        if not self.off:
            self.warn(f"cache {self.config.url}: {what} ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); building locally")
        self.off = True

    def _sign(self, entry: dict) -> str:
        body = json.dumps({k: v for k, v in entry.items() if k != "hmac"}, sort_keys=True).encode()
        return hmac.new(self.config.secret, body, hashlib.sha256).hexdigest()

    def _write_atomic(self, path: str, data: bytes) -> None:
        """Object stores put whole objects; a shared folder needs a rename to be as atomic."""
        fs = self._fs
        if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{path}.{secrets.token_hex(6)}.tmp"
            fs.pipe_file(tmp, data)
            fs.mv(tmp, path)
        else:
            fs.pipe_file(path, data)

    # ------------------------------------------------------------ reading

    def _cat_many(self, paths: list[str]) -> dict[str, bytes | Exception]:
        """Fetch many objects at once (s3fs and gcsfs fetch them concurrently); a missing
        object comes back as its exception, a backend fault raises."""
        if not paths:
            return {}
        found = self._filesystem().cat(paths, on_error="return")
        if not isinstance(found, dict):  # a single path comes back bare
            found = {paths[0]: found}
        return found

    def entries(self, plans) -> dict[str, dict]:
        """Trusted entries of the targets that are in the cache, by target id (one round trip)."""
        if self.off or not plans:
            return {}
        try:
            self._filesystem()
            paths = {self._entry_path(plan.key): plan for plan in plans}
            found = self._cat_many(list(paths))
        except Exception as err:  # any backend error: network, credentials, missing bucket
            self._fault("unreachable or misconfigured", err)
            return {}
        entries = {}
        for path, plan in paths.items():
            data = found.get(path)
            if data is None or isinstance(data, FileNotFoundError):
                continue
            if isinstance(data, Exception):
                self._fault("unreachable or misconfigured", data)
                return {}
            try:
                entry = json.loads(data)
            except (ValueError, UnicodeDecodeError) as err:
                self.warn(f"cache: the entry of {plan.id} is unreadable ({err}): refused")
                continue
            if self._trusted(plan, entry):
                entries[plan.id] = entry
        return entries

    def entry(self, plan) -> dict | None:
        return self.entries([plan]).get(plan.id)

    def _trusted(self, plan, entry) -> bool:
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or entry.get("key") != plan.key or not isinstance(files, dict) \
                or not files or not all(isinstance(d, str) for d in files.values()):
            self.warn(f"cache: the entry of {plan.id} does not describe its key: refused")
            return False
        unsafe = [name for name in files if not isinstance(name, str) or Path(name).name != name
                  or name in (".", "..")]
        if unsafe:
            self.warn(f"cache: the entry of {plan.id} names a file outside its folder ({unsafe[0]!r}): refused")
            return False
        if self.config.secret is not None:
            signature = entry.get("hmac")
            if not isinstance(signature, str) or not hmac.compare_digest(signature, self._sign(entry)):
                self.warn(f"cache: the entry of {plan.id} is {'unsigned' if not signature else 'wrongly signed'} "
                          f"for this {ENV_SECRET}: refused")
                return False
        return True

    def fetch_all(self, plans) -> dict[str, dict[str, bytes]]:
        """Every hit's files, checked against their digests, by target id: entries in one round
        trip, blobs in another. A target with a bad or missing blob is left out (built here)."""
        entries = self.entries(plans)
        wanted = {digest: self._blob_path(digest) for e in entries.values() for digest in e["files"].values()}
        try:
            blobs = self._cat_many(sorted(set(wanted.values())))
        except Exception as err:
            self._fault("failed during a download", err)
            return {}
        hits = {}
        for target, entry in entries.items():
            files = {}
            for name, digest in sorted(entry["files"].items()):
                data = blobs.get(wanted[digest])
                if isinstance(data, FileNotFoundError) or data is None:
                    self.warn(f"cache: the entry of {target} names a blob that is missing: refused")
                    break
                if isinstance(data, Exception):
                    self._fault("failed during a download", data)
                    return {}
                if sha256_bytes(data) != digest:
                    self.warn(f"cache: blob {name} of {target} does not match its digest: refused")
                    break
                files[name] = data
            else:
                hits[target] = files
        return hits

    # ------------------------------------------------------------ writing

    def push(self, plan, directory: Path, names: list[str]) -> bool:
        """Upload a verified target: blobs first (skipping those already there), the entry last."""
        if self.off or not self.config.writes:
            return False
        try:
            fs = self._filesystem()
            files = {}
            for name in names:
                data = (directory / name).read_bytes()
                digest = sha256_bytes(data)
                files[name] = digest
                if not fs.exists(self._blob_path(digest)):
                    self._write_atomic(self._blob_path(digest), data)
            entry = {"layout": LAYOUT, "key": plan.key, "target": plan.id, "files": files,
                     "tfbuild": __version__}
            if self.config.secret is not None:
                entry["hmac"] = self._sign(entry)
            self._write_atomic(self._entry_path(plan.key), json.dumps(entry, sort_keys=True).encode())
        except Exception as err:
            self._fault("upload failed", err)
            return False
        return True

    def size(self, entry: dict) -> int:
        try:
            return sum(self._fs.size(self._blob_path(d)) for d in entry["files"].values())
        except Exception:
            return 0
