"""Faults of the machine (a full disk, a read-only folder) and leftovers of targets no recipe
declares any more: said as what they are, nothing lost, nothing removed behind the user's back."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest

from conftest import assert_user_error
from models import write_dense_project


def test_a_machine_fault_names_the_folder_and_the_fix():
    from tfbuild.errors import machine_fault

    full = OSError(errno.ENOSPC, "No space left on device", "/p/build/clf/.tfbuild-staging-1/fp32/model.tflite")
    assert machine_fault(full, "/p") == (
        "cannot write build/clf/.tfbuild-staging-1/fp32: no space left on the device; free space on it "
        "and run tfbuild again (finished targets and the last good outputs are kept)")
    read_only = OSError(errno.EROFS, "Read-only file system", "/elsewhere/out/x")
    assert machine_fault(read_only, "/p").startswith("cannot write /elsewhere/out: the file system is read-only; "
                                                     "make it writable, or set output_dir")
    assert machine_fault(OSError(errno.ENOENT, "No such file"), "/p") is None  # a bug, not the machine
    assert machine_fault(ValueError("x")) is None


def test_a_defaults_list_option_too_long_for_the_os_is_a_located_error(project):
    write_dense_project(project)
    long = "x" * 300
    text = project.path("recipes/clf.yaml").read_text()
    project.path("recipes/clf.yaml").write_text(f"defaults:\n  - quant@targets.fp32: {long}\n  - _self_\n{text}")
    project.path("recipes/quant").mkdir()
    assert_user_error(project.run("-n"), "recipes/clf.yaml: line 2", "defaults list entry 1", "no piece")
    assert_user_error(project.run("-n", f"quant@targets.fp32={long}"), "no piece")


def _can_mount(tmp_path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True).returncode:
        return False
    subprocess.run(["umount", str(probe)], check=True)
    return True


@pytest.fixture
def small_build_folder(tmp_path, project):
    """`build/` on a 48 KiB tmpfs (root only; CI runs as root): too small for the model."""
    if not _can_mount(tmp_path):
        if os.environ.get("CI") == "true":
            pytest.fail("CI must be able to mount a tmpfs (it runs as root)")
        pytest.skip("needs root and mount")
    build = project.path("build")
    build.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(build)], check=True)
    yield build
    subprocess.run(["umount", "-l", str(build)], check=False)


@pytest.mark.slow
def test_a_full_disk_fails_the_target_as_a_full_disk_and_loses_nothing(project, small_build_folder):
    write_dense_project(project, targets="fp32: {}\nfp16: {quantize: float16}", hidden=2048)
    full = project.run("-k")
    assert full.code == 1, full.text
    assert "crashed" not in full.out and "Traceback" not in full.text, full.text
    assert "no space left on the device; free space on it and run tfbuild again" in full.out, full.out
    assert "failed clf:fp32" in full.out and "cannot write build/clf/.tfbuild-staging-" in full.out
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_build_folder)], check=True)
    grown = project.run()
    assert grown.code == 0 and "built clf:fp32" in grown.out, grown.text
    assert not list(small_build_folder.glob("clf/.tfbuild-staging-*"))
    subprocess.run(["mount", "-o", "remount,ro", str(small_build_folder)], check=True)
    project.path("models/clf.keras").touch()  # a new stat, the same bytes: nothing to write
    assert project.run().code == 0
    write_dense_project(project, targets="fp32: {}\nfp16: {quantize: float16}", hidden=24)  # new bytes
    read_only = project.run("-k")
    assert read_only.code == 1 and "the file system is read-only" in read_only.out, read_only.text
    assert "crashed" not in read_only.out
    subprocess.run(["mount", "-o", "remount,rw", str(small_build_folder)], check=True)
    assert project.path("build/clf/fp32/model.tflite").is_file()  # the last good build is intact
    again = project.run()
    assert again.code == 0 and "built clf:fp32" in again.out and "built clf:fp16" in again.out, again.text


@pytest.mark.slow
def test_orphans_are_listed_by_status_and_removed_only_by_clean(project):
    write_dense_project(project, targets="fp32: {}\nstrict: {quantize: int8, accept: {max_size_kb: 0.1}}")
    assert project.run("-k").code == 1  # strict is rejected: its file is kept for inspection
    assert project.path(".tfbuild/rejected/clf/strict/model.tflite").is_file()
    write_dense_project(project, targets="fp32: {}")  # the strict target is removed from the recipe
    project.path("recipes/old.yaml").write_text(project.path("recipes/clf.yaml").read_text())
    assert project.run().code == 0 and project.path("build/old/fp32/model.tflite").is_file()
    project.path("recipes/old.yaml").unlink()  # and a whole recipe is deleted
    plain = project.run()
    assert plain.code == 0 and project.path("build/old/fp32/model.tflite").is_file()  # never silently
    status = project.run("status")
    assert status.code == 0, status.text
    assert "orphan      old:fp32: no recipe declares it" in status.out
    assert "orphan      clf:strict" in status.out and "orphan      clf:fp32" not in status.out
    dry = project.run("clean", "-n", "--orphans")
    assert "would remove build/old/fp32/model.tflite" in dry.out
    assert "would remove .tfbuild/rejected/clf/strict/model.tflite" in dry.out
    assert project.path("build/old/fp32/model.tflite").is_file()
    cleaned = project.run("clean", "--orphans")
    assert cleaned.code == 0 and "cleaned old:fp32" in cleaned.out and "cleaned clf:strict" in cleaned.out
    assert not project.path("build/old").exists() and not project.path(".tfbuild/rejected/clf/strict").exists()
    assert project.path("build/clf/fp32/model.tflite").is_file()
    assert "orphan" not in project.run("status").out
    assert_user_error(project.run("clean", "--orphans", "clf"), "takes no target")
    assert_user_error(project.run("--orphans"), "--orphans does not apply to `tfbuild build`")
