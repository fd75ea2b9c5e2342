"""What the user sees: live progress, one line per finished target, and the closing summary.

On a terminal a rich progress bar shows what is running; anywhere else (CI logs, pipes) plain
lines, so logs stay greppable. The summary table reads each target's report.json, so it shows
the same numbers as the files on disk.
"""

from __future__ import annotations

import sys
import time

from tfbuild.plan import REPORT_FILE

STATUS_STYLE = {"built": "green", "cached": "green", "rendered": "green", "up-to-date": "dim", "failed": "red",
                "crashed": "red", "rejected": "red", "skipped": "yellow", "error": "red"}


class Progress:
    def __init__(self, total: int, *, verbose: bool = False):
        self._console = None
        self.tty = sys.stdout.isatty()
        self.total = total
        self.done = 0
        self.verbose = verbose
        self.started = time.perf_counter()
        self._bar = None
        if self.tty and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, SpinnerColumn, \
                TextColumn, TimeElapsedColumn

            self._bar = Bar(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), console=self.console, transient=True)
            self._task = self._bar.add_task("building", total=total)
            self._activity: dict[str, str] = {}  # recipe -> what its worker is doing
            self._bar.start()

    @property
    def console(self):
        """rich is imported on first use: an up-to-date build prints one plain line."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False) if self.tty else Console(highlight=False, width=200)
        return self._console

    def start(self, plan) -> None:
        self.phase(plan.loaded.name, plan.id, "converting")

    def phase(self, recipe: str, what: str, doing: str) -> None:
        """What a worker is doing now (loading the model, converting, verifying), on a terminal."""
        if self._bar is not None:
            self._activity[recipe] = f"{what}: {doing}"
            self._bar.update(self._task, description=" | ".join(self._activity.values()))

    def finish(self, outcome) -> None:
        self.done += 1
        plan = outcome.plan
        if self._bar is not None:
            self._activity.pop(plan.loaded.name, None)
            self._bar.update(self._task, advance=1, description=" | ".join(self._activity.values()))
        if outcome.status == "up-to-date" and not self.verbose:
            return
        took = f" ({outcome.seconds:.1f}s)" if outcome.seconds else ""
        style = STATUS_STYLE.get(outcome.status, "")
        self.line(f"[{self.done}/{self.total}] [{style}]{outcome.status}[/] {plan.id}{took}")
        for message in outcome.messages:
            if outcome.status == "error":
                print(message, file=sys.stderr)  # user errors read the same wherever they arise
            else:
                self.line(f"    {message}", markup=False)
        for warning in outcome.warnings:
            self.line(f"    warning: {warning}", markup=False)

    def idle(self, recipe: str) -> None:
        if self._bar is not None:
            self._activity.pop(recipe, None)
            self._bar.update(self._task, description=" | ".join(self._activity.values()))

    def warn(self, message: str) -> None:
        self.line(f"warning: {message}", markup=False)

    def note(self, recipe: str, message: str) -> None:
        """Something true of a whole recipe (a fallback taken), said once."""
        self.line(f"note: {recipe}: {message}", markup=False)

    def detail(self, message: str) -> None:
        """What only -v shows: which worker or node runs which recipe."""
        if self.verbose:
            self.line(f"  {message}", markup=False)

    def line(self, text: str, *, markup: bool = True) -> None:
        """One line; never broken in a log or a pipe (a message stays greppable whole)."""
        self.console.print(text, markup=markup, highlight=False, soft_wrap=not self.tty)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def headline_metrics(report: dict) -> str:
    metrics = report.get("metrics") or {}
    parts = []
    accuracy = metrics.get("accuracy")
    if accuracy:
        per = "/frame" if accuracy.get("positions") else ""
        parts.append(f"acc{per} {accuracy['tflite']:.3f} (source {accuracy['source']:.3f})")
    for name, m in (metrics.get("outputs") or {}).items():
        prefix = f"{name} " if len(metrics["outputs"]) > 1 else ""
        if "top1_agreement" in m:
            ties = f" ({m['near_ties']} near-ties)" if m.get("near_ties") else ""
            per = "/frame" if m.get("positions") else ""
            parts.append(f"{prefix}top1{per} {m['top1_agreement']:.3f}{ties}")
        parts.append(f"{prefix}cos {m['cosine']:.4f}")
    if (report.get("float_ops") or {}).get("count"):
        parts.append(f"float ops {report['float_ops']['count']}")
    if not metrics:
        parts.append(report.get("verdict", ""))
    return ", ".join(parts)


def layer_labels(layers: list[str], rows: list[dict]) -> list[str]:
    """`#3 FULLY_CONNECTED functional_1/dense_1/MatMul…`: where an op is in the graph and what it
    is, with the start of its tensor name (TensorFlow fuses the names of the ops it merges)."""
    by_tensor = {row["tensor"]: row for row in rows}
    labels = []
    for name in layers:
        short = name.split(";")[0] + ("…" if ";" in name else "")
        row = by_tensor.get(name)
        labels.append(f"#{row['index']} {row['op']} {short}" if row else short)
    return labels


def layer_lines(report: dict, count: int = 8) -> list[str]:
    """What `explain` says about an integer target's layers: those kept in float (and how they
    were chosen, or the sets an unsuccessful search tried) and the worst layers of the fully
    quantized model, worst first."""
    from tfbuild.layer_error import worst

    rows = report.get("layer_errors") or []
    info = report.get("float_fallback") or {}
    lines = []
    if info.get("mode") not in (None, "none"):
        how = f", search: {info['search']}" if info.get("search") else ""
        kept = ", ".join(layer_labels(info.get("layers") or [], rows)) or "none"
        lines.append(f"float_fallback: {info['mode']}{how}; kept in float: {kept}")
        if info.get("mode") == "auto" and info.get("tried"):
            outcome = "" if info.get("passed") else ", none passed"
            lines.append(f"  tried {len(info['tried'])} set(s) of at most {info.get('max_float_layers')} "
                         f"layer(s){outcome}:")
            lines += [_tried_line(entry, rows) for entry in info.get("scored") or
                      [{"layers": layers} for layers in info["tried"]]]
    lines += float_ops_lines(report)
    if report.get("layer_errors_missing"):
        lines.append(report["layer_errors_missing"])
    if rows:
        lines.append("worst layers of the fully quantized model (cost: what quantizing it adds; error: "
                     "relative to the signal; rmse/scale: in quantization steps):")
        for row in worst(rows, count):
            steps = f"{row['rmse_scale']:.3g}" if row["rmse_scale"] is not None else "float"
            flag = "  kept in float" if row.get("kept_float") else ""
            lines.append(f"  #{row['index']:<3} {row['op']:<16} cost {row.get('cost', 0.0):.3f}  error "
                         f"{row['error']:.3f}  rmse/scale {steps:<6} {row['tensor']}{flag}")
    return lines


def _tried_line(entry: dict, rows: list[dict]) -> str:
    layers = ", ".join(layer_labels(entry["layers"], rows)) or "none"
    if "passed" not in entry:  # a report written before the sets were scored
        return f"    [{layers}]"
    verdict = "passed" if entry["passed"] else f"missed {'; '.join(entry['failures'])}"
    return f"    [{layers}]: {entry['metrics']}; {verdict}"


def float_ops_lines(report: dict) -> list[str]:
    """An integer target's ops that still compute in float, by type."""
    found = report.get("float_ops")
    if not found:
        return []
    if not found["count"]:
        return ["integer-only: every op computes in integers"]
    from tfbuild.verify import float_op_types

    return [f"{found['count']} op(s) compute in float: {float_op_types(found)}"]


def summary_rows(outcomes) -> list[list[str]]:
    reports = {o.plan.id: o.plan.read_output(REPORT_FILE) for o in outcomes}
    float_sizes = {o.plan.loaded.name: reports[o.plan.id]["size_bytes"] for o in outcomes
                   if reports[o.plan.id] and reports[o.plan.id].get("quantize") == "float32"}
    rows = []
    for outcome in outcomes:
        report = reports[outcome.plan.id] if outcome.status not in ("failed", "crashed", "rejected", "error", "skipped") else None
        size = ratio = metrics = latency = ""
        if report:
            size = f"{report['size_bytes'] / 1024:.1f} KiB"
            base = float_sizes.get(outcome.plan.loaded.name)
            ratio = f"{report['size_bytes'] / base:.2f}x" if base else ""
            metrics = headline_metrics(report)
            latency = f"{report['latency_ms']:.3f} ms" if report.get("latency_ms") is not None else ""
        elif outcome.messages:
            metrics = outcome.messages[0].splitlines()[0]  # whole: the column wraps
        rows.append([outcome.plan.id, outcome.status, size, ratio, metrics, latency,
                     f"{outcome.seconds:.1f}s" if outcome.seconds else ""])
    return rows


def outcomes_in_order(outcomes) -> list:
    """Recipes by name, targets in recipe order: the summary reads the same whatever finished first."""
    return sorted(outcomes, key=lambda o: (o.plan.loaded.name, list(o.plan.loaded.recipe.targets).index(o.plan.name)))


def print_summary(progress: Progress, outcomes, elapsed: float) -> None:
    if not outcomes:
        return
    if all(o.status == "up-to-date" for o in outcomes):
        print(f"tfbuild: all {len(outcomes)} target(s) up to date ({elapsed:.2f}s)")
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    rows = summary_rows(outcomes_in_order(outcomes))
    fixed = sum(max(len(r[i]) for r in rows + [["target", "status", "size", "vs fp32", "", "latency", "time"]])
                for i in (0, 1, 2, 3, 5, 6)) + 12
    for column in ("target", "status", "size", "vs fp32", "metrics", "latency", "time"):
        if column == "metrics":  # the one column that wraps (never cuts) on a narrow terminal
            table.add_column(column, overflow="fold", max_width=max(16, progress.console.width - fixed))
        else:
            table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row, style=STATUS_STYLE.get(row[1], ""))
    progress.console.print()
    progress.console.print(table)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    order = ("built", "cached", "rendered", "up-to-date", "rejected", "failed", "crashed", "error", "skipped")
    summary = ", ".join(f"{counts[s]} {s}" for s in order if s in counts)
    progress.console.print(f"{summary} in {elapsed:.1f}s", highlight=False)


def exit_code(outcomes) -> int:
    if any(o.status == "error" for o in outcomes):
        return 2
    return 0 if all(o.ok for o in outcomes) else 1
