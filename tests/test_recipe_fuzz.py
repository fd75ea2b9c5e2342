"""Seeded fuzzing of the shipped recipes, the piece they compose and command-line overrides.

A recipe is hand-written YAML that many people edit and git merges, so planning (`tfbuild -n`,
`tfbuild check`, `tfbuild status`) must end in success (0), an out-of-date answer (1) or one
located user error (2, naming a recipe file): never a traceback, never a hang, never slow.
Planning runs in-process through `cli.main`, exactly the code path of those commands.

TFBUILD_FUZZ_RUNS=600 runs more mutations (the default keeps the suite fast); TFBUILD_FUZZ_SEED
picks another seed.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tfbuild import cli

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("recipes/digits.yaml", "recipes/swish.yaml", "recipes/quant/int8_strict.yaml")
COMMANDS = (["-n"], ["check"], ["status"])
RUNS = int(os.environ.get("TFBUILD_FUZZ_RUNS", "120"))
SEED = int(os.environ.get("TFBUILD_FUZZ_SEED", "16"))
RUN_SECONDS = 2.0
RECIPE_FILE = re.compile(r"recipes/[\w/.-]+\.yaml")

BAD_DEFAULTS = [
    "  - nested: _self_", "  - quant@targets.int8: [int8_strict, int8_strict]", "  - 42",
    "  - {quant@targets.int8: int8_strict, other: x}", "  - quant@: int8_strict",
    "  - quant@targets.int8: nosuch", "  - ../../etc: passwd", "  - quant@targets.int8:",
    "  - _self_", "  - optional quant@targets.int8: int8_strict", "  - /quant@targets.int8: int8_strict",
    "  - quant@targets.int8: int8_strict", "  - quant/int8_strict", "  - [quant]",
    "  - quant@targets..int8: int8_strict", "  - quant@_global_: int8_strict",
    "  - quant@targets.int8: ${oc.env:HOME}", "  - hydra/job_logging: disabled",
    "  - quant@targets.int8: ../quant/int8_strict", "  - quant@targets.fp16: int8_strict",
    "  - quant@model: int8_strict", "  - : x", "  -", "  - quant@targets.int8: null",
]
BAD_OVERRIDES = [
    "targets.int8.quantize=[[[", "~model", "+defaults=[x]", "targets=", "=x", "a.b.c=1",
    "targets.int8=null", "targets.int8.quantize=${oc.env:HOME}", "quant@targets.int8=nosuch",
    "quant@targets.int8=int8_strict", "quant=int8_strict", "+quant@targets.x=int8_strict",
    "targets.fp32.accept.top1_agreement=2", "model.source=../../etc/passwd", "model=[1,2]",
    "++model.source=1", "~targets.fp32", "~targets", "targets.int8.quantize='int8", "x=${x}",
    "+x=" + "[" * 300 + "]" * 300, "tfbuild=2", "hydra.run.dir=x", "+hydra.job.chdir=true",
    "data.calibration=nosuch.npz", "mobile.labels=examples/digits/digits.keras",
    "model.source=examples/digits/labels.txt", "model.source=examples/digits/calibration.npz",
    "model.source=examples/digits", "data.calibration=examples/digits/labels.txt", "defaults=[]",
    "~defaults", "targets.int8.quantize=float16", "targets.fp32.output=../x.tflite",
    "+targets.new={quantize: int8}", "+targets.new.quantize=int8", "accept=${accept}",
    "data.evaluation=examples/digits/digits.keras", "model.source=examples/swish/data.npz",
    "targets.int8.io=\x00", "targets.int8.quantize=ïnt8", "+a=" + "{a:" * 200 + "1" + "}" * 200,
    "targets.int8={}", "+model.inputs.x.shape=[1,2,3]", "model.batch_size=-1",
]
VALUES = ["[]", "{}", "1", "-1", "0.5", "null", "true", "'x'", "[1, 2]", "{a: 1}", "yes", "~",
          "'${model}'", "${nosuch}", "${oc.env:HOME}", "2024-01-01", "1e3", ".inf", "!!binary aGVsbG8=",
          "!!python/object/apply:os.system [echo hi]", "!!set {a, b}", "!foo bar", "=", "<<: 1",
          "!!python/object/apply:pathlib.Path [x]", "'unterminated", "[unclosed", "{unclosed",
          "*undefined", "&anchor x", "|\n  block", ">-", "\"\\x\"", "0x1F", "0o17", "+12", "1_000",
          "\"a\\0b.keras\"", "x" * 300 + ".npz", "/x/" * 400, "0x_", "\"\\uD800\""]
KEYS = ["quantize", "io", "model", "targets", "fp32", "accept", "defaults", "_self_", "tfbuild",
        "x", "<<", "? [a]", "1", "null", "'quoted'", "~", "\"a.b\"", "hydra", "int8", "a b"]


def deep(depth: int, rng: random.Random) -> str:
    kind = rng.choice(("flow_list", "flow_map", "block"))
    if kind == "flow_list":
        return "[" * depth + "]" * depth
    if kind == "flow_map":
        return "{a: " * depth + "1" + "}" * depth
    return "\n" + "".join(f"{'  ' * (i + 1)}a:\n" for i in range(depth)) + "  " * (depth + 1) + "1"


def alias_bomb(levels: int, width: int) -> str:
    lines = ['zlol0: &l0 "lol"']
    lines += [f"zlol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def interpolation_bomb(levels: int, width: int) -> str:
    lines = ["zlol0: lol"]
    lines += [f"zlol{i}: '{'${zlol%d}' % (i - 1) * width}'" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def mutate(text: str, rng: random.Random) -> str:
    """One random damage to a recipe's text, of the kinds people and merges actually make."""
    lines = text.splitlines()
    at = rng.randrange(len(lines) + 1)
    kind = rng.randrange(17)
    if kind == 0 and lines:
        del lines[rng.randrange(len(lines))]
    elif kind == 1 and lines:
        lines.insert(at, rng.choice(lines))
    elif kind == 2:  # a careless merge: a whole top-level block again, at the end
        starts = [i for i, line in enumerate(lines) if line[:1].isalpha()] or [0]
        first = rng.choice(starts)
        last = next((i for i in starts if i > first), len(lines))
        lines += lines[first:last]
    elif kind == 3 and lines:  # another type of value
        i = rng.randrange(len(lines))
        if ":" in lines[i]:
            lines[i] = lines[i].split(":", 1)[0] + ": " + rng.choice(VALUES)
    elif kind == 4:
        lines.insert(at, rng.choice(["a: &a [*a, *a]", "a: &a {b: *a}", "b: &b {c: [*b]}",
                                     "base: &base {quantize: int8}", "again: *base",
                                     "<<: *base", "x: *nope", "y: &y 1\nz: *y"]))
    elif kind == 5:
        bomb = rng.choice((alias_bomb, interpolation_bomb))
        lines.append(bomb(rng.choice((3, 5, 8, 12)), rng.choice((2, 9, 30))))
    elif kind == 6 and lines:  # deep nesting as a value or a new key
        depth = rng.choice((5, 30, 100, 200, 600, 3000))
        i = rng.randrange(len(lines))
        key = lines[i].split(":", 1)[0] if ":" in lines[i] else "x"
        lines[i] = f"{key}: {deep(depth, rng)}"
    elif kind == 7:  # unknown key, somewhere, at some indentation
        lines.insert(at, "  " * rng.randrange(4) + f"{rng.choice(KEYS)}: {rng.choice(VALUES)}")
    elif kind == 8 and lines:  # broken indentation
        i = rng.randrange(len(lines))
        lines[i] = rng.choice((" ", "   ", "\t", "")) + lines[i].lstrip(" ") * rng.randrange(1, 3)
    elif kind == 9:  # a bad defaults list entry, or a bad defaults value
        if "defaults:" not in text:
            lines[:0] = ["defaults:", "  - _self_"]
        i = next(i for i, line in enumerate(lines) if line.startswith("defaults:"))
        if rng.random() < 0.2:
            lines[i] = "defaults: " + rng.choice(["3", "{a: b}", "null", "x", "[[_self_]]", "'_self_'"])
        else:
            lines.insert(i + 1 + rng.randrange(3), rng.choice(BAD_DEFAULTS))
    elif kind == 10:  # random bytes, kept as text through surrogates where they are not UTF-8
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
        position = rng.randrange(len(text) + 1)
        return text[:position] + blob.decode("utf-8", "surrogateescape") + text[position:]
    elif kind == 11:
        return text[: rng.randrange(len(text) + 1)]  # truncated (an interrupted write)
    elif kind == 12:
        lines.insert(at, rng.choice(["---", "...", "%YAML 1.1", "%TAG ! tag:x,2000:", "--- !!map",
                                     "- a list item", "? complex key", "&dangling", "!!python/name:os.system"]))
    elif kind == 13 and lines:  # a scalar turned into an interpolation
        i = rng.randrange(len(lines))
        if ":" in lines[i]:
            lines[i] = lines[i].split(":", 1)[0] + ": " + rng.choice(
                ["${model.source}", "${targets}", "${.}", "${..x}", "'${a}${a}'", "${oc.create:{}}",
                 "${oc.decode:'[1,'}", "${oc.select:x}", "${x:y}", "${}", "${${x}}"])
    elif kind == 14:  # the same key twice in a mapping
        indented = [line for line in lines if line.startswith("  ") and ":" in line] or ["x: 1"]
        lines.insert(at, rng.choice(indented))
    elif kind == 15:
        lines = ["x: 1" for _ in range(rng.choice((10, 3000, 30000)))] + lines
    else:
        lines.insert(at, rng.choice(["a: !!binary aGVsbG8=", "a: !!python/object:os.system {}",
                                     "b: !!set {x, y}", "c: !!omap [a: 1]", "d: !!timestamp 2001-12-14",
                                     "e: !!float x", "f: !!int x", "g: !!str", "h: !!map []",
                                     "tfbuild: !!str 1", "tfbuild: 1.0", "tfbuild: true"]))
    return "\n".join(lines) + ("\n" if rng.random() < 0.9 else "")


@pytest.fixture(scope="module")
def fuzz_project(tmp_path_factory) -> Path:
    """The shipped recipes with the examples they name, and a lock so `check` plans too."""
    root = tmp_path_factory.mktemp("fuzz")
    for relative in SHIPPED:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / relative, root / relative)
    shutil.copytree(REPO / "examples", root / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", "train.py"))
    (root / "tfbuild.lock").write_text('{"lock_version": 1, "targets": {}}\n')
    return root


def plan_in_process(root: Path, args: list[str]) -> tuple[int | str, str, float]:
    """cli.main with -C root, output captured; any escaping exception is returned by name."""
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGPIPE)}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code: int | str = cli.main(["-C", str(root), *args])
    except BaseException as crash:  # noqa: BLE001 - what the test is looking for
        import traceback

        code = f"{type(crash).__name__}: {crash}"[:300]
        err.write(traceback.format_exc())
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return code, out.getvalue() + err.getvalue(), time.perf_counter() - started


INPUTS = ("examples/digits/digits.keras", "examples/digits/calibration.npz",
          "examples/digits/evaluation.npz", "examples/digits/labels.txt", "examples/swish/data.npz",
          "examples/swish/swish.keras")


def damage(data: bytes, rng: random.Random) -> bytes:
    """An input file as it arrives broken: truncated, overwritten, an LFS pointer, re-encoded."""
    kind = rng.randrange(5)
    if kind == 0:
        return data[: rng.randrange(len(data))]
    if kind == 1:
        at = rng.randrange(len(data))
        return data[:at] + bytes(rng.randrange(256) for _ in range(64)) + data[at + 64:]
    if kind == 2:
        return b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n"
    if kind == 3:
        return "zéro\nun\n".encode("latin-1")
    return b""


def fuzz_case(rng: random.Random, originals: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Which files to damage and how, and the command line to plan them with."""
    texts = dict(originals)
    if rng.random() < 0.1:  # the recipes are fine, a file they name is not
        victim = rng.choice(INPUTS)
        return {**texts, victim: damage((REPO / victim).read_bytes(), rng)}, list(rng.choice(COMMANDS))
    victim = rng.choice(SHIPPED if rng.random() < 0.85 else SHIPPED[:1])
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        texts[victim] = mutate(texts[victim], rng)
    args = list(rng.choice(COMMANDS))
    if rng.random() < 0.25:
        args.append(rng.choice(BAD_OVERRIDES))
    if rng.random() < 0.3:
        args.append(rng.choice(("digits", "swish", "digits:int8")))
    if rng.random() < 0.1:  # only an override is wrong
        texts = dict(originals)
        args.append(rng.choice(BAD_OVERRIDES))
    return texts, args


def write_texts(root: Path, texts: dict[str, str | bytes]) -> None:
    for relative, text in texts.items():
        (root / relative).write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape"))


def test_mutated_recipes_plan_or_fail_clearly(fuzz_project):
    rng = random.Random(SEED)
    originals = {relative: (REPO / relative).read_text() for relative in SHIPPED}
    outcomes: Counter = Counter()
    problems, slowest = [], (0.0, None)
    started = time.perf_counter()
    for run in range(RUNS):
        texts, args = fuzz_case(rng, originals)
        write_texts(fuzz_project, texts)
        code, text, seconds = plan_in_process(fuzz_project, args)
        outcomes[code if isinstance(code, int) else "crash"] += 1
        slowest = max(slowest, (seconds, run))
        clear = code in (0, 1) or (code == 2 and RECIPE_FILE.search(text) and "Traceback" not in text
                                   and text.lstrip().startswith("error:"))
        if not clear or seconds > RUN_SECONDS:
            changed = {k: v for k, v in texts.items() if v != originals.get(k)}
            problems.append(f"run {run}: {args} -> {code} in {seconds:.2f}s\n{changed}\n{text[-1500:]}")
        write_texts(fuzz_project, {k: (REPO / k).read_bytes() for k in texts if k not in originals})
    write_texts(fuzz_project, originals)
    assert not (fuzz_project / ".tfbuild").exists(), "queries and dry runs must leave the disk alone"
    print(f"{RUNS} runs in {time.perf_counter() - started:.1f}s: {dict(outcomes)}; "
          f"slowest run {slowest[1]}: {slowest[0]:.2f}s")
    assert not problems, f"{len(problems)} of {RUNS} runs:\n\n" + "\n\n".join(problems[:5])
