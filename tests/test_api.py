"""The build API (`tfbuild.build`), as a script or a notebook would call it: the same build the
command line runs, its result as values instead of printed lines."""

from __future__ import annotations

import pytest

import tfbuild
from models import write_dense_project
from tfbuild.errors import UserError


@pytest.mark.slow
def test_build_returns_outcomes_then_is_a_no_op(project):
    write_dense_project(project, targets="fp32: {}\nint8: {quantize: int8}")
    result = tfbuild.build(project.root, ["clf"], jobs=1)
    assert result.exit_code == 0 and not result.up_to_date
    assert sorted((o.plan.id, o.status) for o in result.outcomes) == [("clf:fp32", "built"), ("clf:int8", "built")]
    assert project.path("build/clf/int8/model.tflite").is_file()
    again = tfbuild.build(project.root)
    assert again.up_to_date and again.exit_code == 0 and len(again.plans) == 2


def test_a_user_mistake_raises_the_located_error(project):
    write_dense_project(project)
    with pytest.raises(UserError) as raised:
        tfbuild.build(project.root, ["clf", "targets.fp32.quantize=int4"])
    assert raised.value.key == "targets.fp32.quantize" and "recipes/clf.yaml" in raised.value.render()
