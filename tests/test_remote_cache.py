"""The shared cache against a real S3 server: moto's standalone server on 127.0.0.1 (random
port), reached by tfbuild through the standard AWS environment, exactly as it would reach AWS.

One project is built once and pushed; every test then works on fresh clones of it (recipes,
models, data and the committed lock; no build/ and no .tfbuild/), as a teammate or CI would.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading

import pytest

from conftest import Project
from models import write_dense_project
from ray_head import free_port
from test_incremental import run_watched

pytestmark = pytest.mark.slow

BUCKET = "tfbuild-cache"
MOBILE = "mobile:\n  android: {package: com.example.clf, class_name: Classifier}\n"
CONVERTED = ("model.tflite", "golden.json")  # report.json holds timings of the run that made it


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server in this process (tfbuild talks to it from its own subprocess)."""
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
           "TFBUILD_CACHE_KEY": ""}
    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=env["AWS_ENDPOINT_URL"],
                           use_listings_cache=False)
    fs.mkdir(BUCKET)
    yield env, fs
    server.stop()


@pytest.fixture(scope="module")
def origin(s3, tmp_path_factory):
    """The project as CI builds it on main: built once, pushed to s3://tfbuild-cache/main."""
    env, _ = s3
    project = Project(tmp_path_factory.mktemp("origin") / "proj")
    write_dense_project(project, targets="fp32: {}\nint8: {quantize: int8}", extra=MOBILE)
    result = project.run("--cache", f"s3://{BUCKET}/main", env=env)
    assert result.code == 0 and "2 built" in result.out, result.text
    assert "warning" not in result.out, result.out
    return project


def clone(origin: Project, where) -> Project:
    """What `git clone` gives a teammate: sources and the committed lock, nothing built."""
    root = where / "clone"
    for name in ("recipes", "models", "data", "tfbuild.lock"):
        source = origin.path(name)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, root / name)
    return Project(root)


def workers_started(project: Project) -> list[str]:
    logs = project.path(".tfbuild/logs")
    return sorted(p.name for p in logs.glob("*.log")) if logs.is_dir() else []


def test_a_fresh_clone_pulls_every_target_without_tensorflow(origin, s3, tmp_path):
    env, _ = s3
    teammate = clone(origin, tmp_path)
    code, out = run_watched(teammate.root, "--cache", f"s3://{BUCKET}/main", env=env)
    assert code == 0, out
    assert "cached clf:fp32" in out and "cached clf:int8" in out and "2 cached" in out, out
    assert "HEAVY []" in out and workers_started(teammate) == []
    for target in ("fp32", "int8"):
        for name in CONVERTED:
            assert teammate.path(f"build/clf/{target}/{name}").read_bytes() == \
                origin.path(f"build/clf/{target}/{name}").read_bytes()
        loader = f"build/clf/{target}/android/src/main/kotlin/com/example/clf/Classifier.kt"
        assert teammate.path(loader).read_text() == origin.path(loader).read_text()  # rendered here
    assert teammate.run("check").code == 0
    assert "all 2 target(s) up to date" in teammate.run().out  # and it is a normal build from now on
    status = teammate.run("cache", "status", "--cache", f"s3://{BUCKET}/main", env=env)
    assert status.code == 0 and "2 of 2 target(s) remote" in status.out, status.text


def test_inputs_the_cache_does_not_have_are_checked_before_any_worker(origin, s3, tmp_path):
    """Hits need no input checks (their key hashes the same files); a miss is checked as ever."""
    env, _ = s3
    teammate = clone(origin, tmp_path)
    teammate.write("models/clf.keras", "version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
    result = teammate.run("--cache", f"s3://{BUCKET}/main", env=env)
    assert result.code == 2, result.text
    assert "recipes/clf.yaml: model.source: not a readable .keras model: a Git LFS pointer" in result.err
    assert workers_started(teammate) == []


def test_a_tampered_blob_is_refused_and_the_target_built_here(origin, s3, tmp_path):
    env, fs = s3
    prefix = f"{BUCKET}/tampered"
    fs.copy(f"{BUCKET}/main", prefix, recursive=True)
    entry = next(json.loads(fs.cat(p)) for p in fs.ls(f"{prefix}/v1/ac") if "fp32" in fs.cat(p).decode())
    digest = entry["files"]["model.tflite"]
    fs.pipe(f"{prefix}/v1/cas/{digest[:2]}/{digest}", b"TFL3 a model somebody slipped in")
    teammate = clone(origin, tmp_path)
    result = teammate.run("--cache", f"s3://{prefix}", env=env)
    assert result.code == 0, result.text
    assert "blob model.tflite of clf:fp32 does not match its digest: refused" in result.out
    assert "built clf:fp32" in result.out and "cached clf:int8" in result.out
    assert b"slipped in" not in teammate.path("build/clf/fp32/model.tflite").read_bytes()
    assert teammate.run("check").code == 0


def test_an_entry_whose_blob_is_missing_is_built_here(origin, s3, tmp_path):
    env, fs = s3
    prefix = f"{BUCKET}/missing"
    fs.copy(f"{BUCKET}/main", prefix, recursive=True)
    for path in fs.ls(f"{prefix}/v1/ac"):
        digest = json.loads(fs.cat(path))["files"]["golden.json"]
        fs.rm(f"{prefix}/v1/cas/{digest[:2]}/{digest}")
    teammate = clone(origin, tmp_path)
    result = teammate.run("--cache", f"s3://{prefix}", env=env)
    assert result.code == 0 and "2 built" in result.out, result.text
    assert "names a blob that is missing: refused" in result.out
    assert not list(teammate.root.rglob(".tfbuild-staging-*"))  # nothing partial left behind


def test_signed_entries_are_trusted_only_with_the_same_key(origin, s3, tmp_path):
    env, fs = s3
    url = f"s3://{BUCKET}/signed"
    writer = clone(origin, tmp_path / "writer")
    assert writer.run("--cache", url, env={**env, "TFBUILD_CACHE_KEY": "k1"}).code == 0
    entries = fs.ls(f"{BUCKET}/signed/v1/ac")
    assert len(entries) == 2 and all("hmac" in json.loads(fs.cat(p)) for p in entries)
    same = clone(origin, tmp_path / "same")
    pulled = same.run("--cache", url, env={**env, "TFBUILD_CACHE_KEY": "k1"})
    assert "2 cached" in pulled.out, pulled.text
    other = clone(origin, tmp_path / "other")
    refused = other.run("--cache", url, "--cache-mode", "read", env={**env, "TFBUILD_CACHE_KEY": "k2"})
    assert refused.code == 0 and "wrongly signed" in refused.out and "2 built" in refused.out, refused.text
    unsigned = clone(origin, tmp_path / "unsigned")
    refused = unsigned.run("--cache", f"s3://{BUCKET}/main", "--cache-mode", "read",
                           env={**env, "TFBUILD_CACHE_KEY": "k1"})
    assert "is unsigned" in refused.out and "2 built" in refused.out, refused.text


def test_an_unreachable_cache_is_one_warning_and_the_build_goes_on(origin, s3, tmp_path):
    env, _ = s3
    dead = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    teammate = clone(origin, tmp_path)
    result = teammate.run("--cache", f"s3://{BUCKET}/main", env={**env, "AWS_ENDPOINT_URL": dead})
    assert result.code == 0 and "2 built" in result.out, result.text
    assert result.out.count("warning: cache s3://") == 1 and "building locally" in result.out
    assert "Traceback" not in result.text


@contextlib.contextmanager
def server_that_stops_at_the_first_blob():
    """A second S3 endpoint on the same moto backend (moto keeps its buckets per process) that
    serves entries, and at the first request for a blob goes away: that request and every later
    one get a 503 while the server shuts down, so new connections are refused."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    moto = DomainDispatcherApplication(create_backend_app)
    stopped = threading.Event()

    def app(environ, start_response):
        if "/v1/cas/" in environ.get("PATH_INFO", "") and not stopped.is_set():
            stopped.set()
            threading.Thread(target=server.shutdown, daemon=True).start()
        if stopped.is_set():
            start_response("503 Service Unavailable", [("Content-Length", "0")])
            return [b""]
        return moto(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", stopped
    finally:
        if not stopped.is_set():
            server.shutdown()
        server.server_close()


def test_a_server_that_stops_mid_pull_leaves_nothing_half_done(origin, s3, tmp_path):
    env, _ = s3
    teammate = clone(origin, tmp_path)
    with server_that_stops_at_the_first_blob() as (endpoint, stopped):
        result = teammate.run("--cache", f"s3://{BUCKET}/main", env={**env, "AWS_ENDPOINT_URL": endpoint})
    assert stopped.is_set()  # the entries were found; the server went away during the download
    assert result.code == 0 and "2 built" in result.out and "cached" not in result.out, result.text
    assert result.out.count("warning: cache s3://") == 1 and "failed during a download" in result.out
    assert "Traceback" not in result.text
    assert not list(teammate.root.rglob(".tfbuild-staging-*"))
    for target in ("fp32", "int8"):
        for name in CONVERTED:
            built = teammate.path(f"build/clf/{target}/{name}").read_bytes()
            assert built == origin.path(f"build/clf/{target}/{name}").read_bytes()
    assert teammate.run("check").code == 0


def test_read_mode_never_writes_and_cache_push_uploads_what_is_built(origin, s3, tmp_path):
    env, fs = s3
    url = f"s3://{BUCKET}/readonly"
    teammate = clone(origin, tmp_path)
    assert teammate.run("--cache", url, "--cache-mode", "read", env=env).code == 0
    assert not fs.exists(f"{BUCKET}/readonly")
    pushed = teammate.run("cache", "push", "--cache", url, env=env)
    assert pushed.code == 0 and "pushed 2 of 2 target(s)" in pushed.out, pushed.text
    assert len(fs.ls(f"{BUCKET}/readonly/v1/ac")) == 2


def test_a_shared_folder_works_as_a_cache(origin, tmp_path):
    store = tmp_path / "shared-cache"
    first = clone(origin, tmp_path / "first")
    assert first.run("--cache", store.as_uri()).code == 0
    assert len(list((store / "v1" / "ac").glob("*.json"))) == 2
    assert not list(store.rglob("*.tmp"))  # written by rename, never seen half-written
    second = clone(origin, tmp_path / "second")
    pulled = second.run(env={"TFBUILD_CACHE": str(store)})
    assert "2 cached" in pulled.out, pulled.text
    third = clone(origin, tmp_path / "third")
    third.write("tfbuild.yaml", f"cache: {{url: '{store}', mode: read}}\n")
    assert "2 cached" in third.run().out
