"""tfbuild: a make-like build tool from Keras models to verified .tflite files and mobile loaders.

    import tfbuild
    result = tfbuild.build("path/to/project", ["digits:int8"], jobs=2)
    result.exit_code, [(o.plan.id, o.status) for o in result.outcomes]

The command line (`tfbuild`) is a thin layer over the same API (tfbuild.api).
"""

from __future__ import annotations

__version__ = "0.3.0"
RECIPE_SCHEMA_VERSION = 1


def build(directory=".", targets=(), **options):
    """Build what is out of date in the project at `directory`, like `tfbuild [TARGET ...]`;
    `options` are api.BuildOptions' fields (jobs, keep_going, always_make, cache, executor, ...).
    Returns an api.BuildResult; a user mistake raises errors.UserError."""
    from pathlib import Path

    from tfbuild.api import BuildOptions, run_build
    from tfbuild.project import Project

    project = Project.open(Path(directory), read_only=False)
    return run_build(project, BuildOptions(list(targets), **options))
