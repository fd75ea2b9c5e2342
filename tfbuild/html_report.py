"""`tfbuild report`: one self-contained HTML page of every target's size, accuracy and latency.

The page is built from the report.json files on disk (no TensorFlow, no network, no scripts):
a table per recipe and an inline SVG scatter of size against accuracy, so the trade-off
between quantization modes is visible at a glance.
"""

from __future__ import annotations

import html
from pathlib import Path

from tfbuild.plan import REPORT_FILE

WIDTH, HEIGHT, PAD = 520, 300, 48


def _quality(report: dict) -> tuple[str, float] | None:
    """The best single quality number a target has: accuracy, else top-1 agreement, else cosine."""
    metrics = report.get("metrics") or {}
    if metrics.get("accuracy"):
        return "accuracy", metrics["accuracy"]["tflite"]
    outputs = list((metrics.get("outputs") or {}).values())
    if outputs and "top1_agreement" in outputs[0]:
        return "top-1 agreement", outputs[0]["top1_agreement"]
    if outputs:
        return "cosine", outputs[0]["cosine"]
    return None


def _scatter(points: list[tuple[str, float, float, float | None]], y_label: str) -> str:
    """SVG: x = size (KiB), y = quality; point label = target (latency in the tooltip)."""
    if not points:
        return "<p>No verified targets to plot.</p>"
    xs = [p[1] for p in points]
    ys = [p[2] for p in points]
    x_lo, x_hi = 0.0, max(xs) * 1.1
    y_lo, y_hi = min(ys) - 0.01, max(1.0, max(ys)) + 0.005

    def sx(x):
        return PAD + (x - x_lo) / (x_hi - x_lo or 1) * (WIDTH - 2 * PAD)

    def sy(y):
        return HEIGHT - PAD - (y - y_lo) / (y_hi - y_lo or 1) * (HEIGHT - 2 * PAD)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img">',
             f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#444"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#444"/>',
             f'<text x="{WIDTH / 2}" y="{HEIGHT - 10}" text-anchor="middle">size (KiB)</text>',
             f'<text x="14" y="{HEIGHT / 2}" transform="rotate(-90 14 {HEIGHT / 2})" text-anchor="middle">'
             f'{html.escape(y_label)}</text>',
             f'<text x="{PAD}" y="{HEIGHT - PAD + 16}" font-size="11">0</text>',
             f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 16}" font-size="11" text-anchor="end">{x_hi:.0f}</text>',
             f'<text x="{PAD - 4}" y="{sy(y_hi) + 4}" font-size="11" text-anchor="end">{y_hi:.3f}</text>',
             f'<text x="{PAD - 4}" y="{sy(y_lo) + 4}" font-size="11" text-anchor="end">{y_lo:.3f}</text>']
    for name, x, y, latency in points:
        tip = f"{name}: {x:.1f} KiB, {y_label} {y:.4f}" + (f", {latency:.3f} ms" if latency is not None else "")
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="#2a6fdb">'
                     f'<title>{html.escape(tip)}</title></circle>')
        parts.append(f'<text x="{sx(x) + 8:.1f}" y="{sy(y) - 6:.1f}" font-size="12">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _row(plan, report: dict | None) -> str:
    if report is None:
        return f"<tr><td>{html.escape(plan.name)}</td><td colspan='7'>not built</td></tr>"
    quality = _quality(report)
    cells = [plan.name, report["quantize"] + ("" if report["io"] == "float32" else f" (io {report['io']})"),
             f"{report['size_bytes'] / 1024:.1f} KiB",
             f"{quality[0]} {quality[1]:.4f}" if quality else "",
             f"{report['latency_ms']:.3f} ms" if report.get("latency_ms") is not None else "",
             report["verdict"], "; ".join(report.get("failures") or report.get("warnings") or []),
             report.get("evaluated_on", "")]
    return "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


def render(plans) -> str:
    sections = []
    by_recipe: dict[str, list] = {}
    for plan in plans:
        by_recipe.setdefault(plan.loaded.name, []).append(plan)
    for recipe, members in by_recipe.items():
        reports = [(plan, plan.read_output(REPORT_FILE)) for plan in members]
        rows = "".join(_row(plan, report) for plan, report in reports)
        points, label = [], "quality"
        for plan, report in reports:
            quality = report and _quality(report)
            if quality:
                label = quality[0]
                points.append((plan.name, report["size_bytes"] / 1024, quality[1], report.get("latency_ms")))
        sections.append(
            f"<section><h2>{html.escape(recipe)}</h2><table><thead><tr><th>target</th><th>mode</th>"
            "<th>size</th><th>quality</th><th>latency (median)</th><th>verdict</th><th>notes</th>"
            f"<th>evaluated on</th></tr></thead><tbody>{rows}</tbody></table>{_scatter(points, label)}</section>")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}"
             "th{background:#f4f4f4}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tfbuild report</title>"
            f"<style>{style}</style></head><body><h1>tfbuild report</h1>{''.join(sections)}</body></html>\n")


def write_report(plans, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(plans), encoding="utf-8")
    tmp.replace(path)
