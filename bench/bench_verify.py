"""Verification cost: checking a target on 200 evaluation samples in the LiteRT interpreter
(plus the latency runs) against converting it, on the digits example. Aim: <= 0.3x.

The figures come from each target's report.json timings, measured inside the worker around
the converter call and around the verification; the source model's run on the same 200 samples
and the import of the LiteRT interpreter are paid once per recipe and counted here in equal
shares per target."""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from pathlib import Path

from common import copy_examples, measure, tfbuild


def main(runs: int = 3) -> None:
    work = Path(tempfile.mkdtemp(prefix="tfbuild-bench-"))
    project = copy_examples(work / "verify")
    ratios: dict[str, list[tuple[float, float]]] = {}
    for _ in range(runs):
        measure(tfbuild("-C", str(project), "-B", "digits", "~mobile"))
        for report_path in sorted((project / "build" / "digits").glob("*/report.json")):
            report = json.loads(report_path.read_text())
            timings = report["timings"]
            # paid once per recipe, counted in equal shares: the source model's run on the same
            # samples, and importing the LiteRT interpreter into the worker
            shared = (timings["reference_s"] + timings["runtime_import_s"]) / 4
            ratios.setdefault(report["target"], []).append(
                (timings["convert_s"], timings["verify_s"] + shared))
    print(f"verification of 200 samples vs conversion, digits (median of {runs})")
    total_convert = total_verify = 0.0
    for target, samples in ratios.items():
        convert = statistics.median(c for c, _ in samples)
        verify = statistics.median(v for _, v in samples)
        total_convert += convert
        total_verify += verify
        print(f"  {target:<10} convert {convert:6.3f} s  verify {verify:6.3f} s  ratio {verify / convert:.2f}x")
    print(f"  all targets: ratio {total_verify / total_convert:.2f}x (aim <= 0.3x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
