"""`tfbuild report`: one self-contained HTML page of every target's size, accuracy and latency.

The page is built from the report.json files on disk (no TensorFlow, no network, no scripts).
Per recipe: a table with every figure the terminal summary shows (and more), an inline SVG
scatter of size against quality with the float32 source model as a dashed line, and for each
integer target the error of every layer and the worst layers, with those kept in float marked.

Points in the scatter are numbered markers whose numbers are the table's `#` column: names never
print on the plot, so they cannot collide, and the markers themselves are placed so that no two
overlap (`place_markers`); a marker moved off its point keeps a leader line to it.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from tfbuild.plan import REPORT_FILE

WIDTH, HEIGHT, PAD = 520, 300, 48
MARKER_R = 9  # radius of a numbered marker, px
LAYER_WIDTH = 420
WORST_LAYERS = 10


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


def _reference(reports: list[dict], label: str) -> float | None:
    """The float32 source model's own value of the plotted quality: its accuracy on the labels, or
    1.0 for agreement and cosine (the source agrees with itself)."""
    if label == "accuracy":
        return next((r["metrics"]["accuracy"]["source"] for r in reports
                     if (r.get("metrics") or {}).get("accuracy")), None)
    return 1.0 if reports else None


def place_markers(points: list[tuple[float, float]], radius: float,
                  bounds: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """Marker centres, one per point, no two closer than 2 * radius + 2: each point keeps its place
    when free, else takes the nearest free spot on rings around it inside `bounds` (x0, y0, x1, y1),
    else a slot of the overflow row below the bounds (always free). Deterministic: points are
    placed in the given order."""
    gap = 2 * radius + 2
    placed: list[tuple[float, float]] = []
    x0, y0, x1, y1 = bounds
    overflow = 0

    def free(x: float, y: float) -> bool:
        return all(math.hypot(x - px, y - py) >= gap for px, py in placed)

    for x, y in points:
        spot = (x, y) if free(x, y) else None
        for ring in range(1, 12):
            if spot is not None:
                break
            distance = ring * gap
            for step in range(8 * ring):
                angle = -math.pi / 2 + 2 * math.pi * step / (8 * ring)  # start above the point
                cx, cy = x + distance * math.cos(angle), y + distance * math.sin(angle)
                if x0 <= cx <= x1 and y0 <= cy <= y1 and free(cx, cy):
                    spot = (cx, cy)
                    break
        if spot is None:
            spot = (x0 + gap * overflow, y1 + gap)
            overflow += 1
            while not free(*spot):
                spot = (x0 + gap * overflow, y1 + gap)
                overflow += 1
        placed.append(spot)
    return placed


def _scatter(points: list[tuple[int, float, float]], y_label: str, reference: float | None) -> str:
    """SVG: x = size (KiB), y = quality; numbered markers (the table's #), the reference dashed."""
    if not points:
        return "<p>No verified targets to plot.</p>"
    xs = [p[1] for p in points]
    ys = [p[2] for p in points] + ([reference] if reference is not None else [])
    x_lo, x_hi = 0.0, max(xs) * 1.1
    y_lo, y_hi = min(ys) - 0.01, max(1.0, max(ys)) + 0.005

    def sx(x):
        return PAD + (x - x_lo) / (x_hi - x_lo or 1) * (WIDTH - 2 * PAD)

    def sy(y):
        return HEIGHT - PAD - (y - y_lo) / (y_hi - y_lo or 1) * (HEIGHT - 2 * PAD)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 3 * MARKER_R}" '
             f'role="img" class="scatter">',
             f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#444"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#444"/>',
             f'<text x="{WIDTH / 2}" y="{HEIGHT - 14}" text-anchor="middle">size (KiB)</text>',
             f'<text x="14" y="{HEIGHT / 2}" transform="rotate(-90 14 {HEIGHT / 2})" text-anchor="middle">'
             f'{html.escape(y_label)}</text>',
             f'<text x="{PAD}" y="{HEIGHT - PAD + 16}" font-size="11">0</text>',
             f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 16}" font-size="11" text-anchor="end">{x_hi:.0f}</text>',
             f'<text x="{PAD - 4}" y="{sy(y_hi) + 4}" font-size="11" text-anchor="end">{y_hi:.3f}</text>',
             f'<text x="{PAD - 4}" y="{sy(y_lo) + 4}" font-size="11" text-anchor="end">{y_lo:.3f}</text>']
    if reference is not None:
        parts.append(f'<line class="reference" x1="{PAD}" y1="{sy(reference):.1f}" x2="{WIDTH - PAD}" '
                     f'y2="{sy(reference):.1f}" stroke="#888" stroke-dasharray="6 4">'
                     f'<title>float32 source model: {reference:.4f}</title></line>')
    exact = [(sx(x), sy(y)) for _, x, y in points]
    spots = place_markers(exact, MARKER_R, (PAD + MARKER_R, PAD, WIDTH - PAD, HEIGHT - PAD - MARKER_R))
    for (px, py), (mx, my) in zip(exact, spots):  # points and leader lines under every marker
        parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="#2a6fdb"/>')
        if (mx, my) != (px, py):
            parts.append(f'<line x1="{px:.1f}" y1="{py:.1f}" x2="{mx:.1f}" y2="{my:.1f}" stroke="#2a6fdb"/>')
    for (number, x, y), (mx, my) in zip(points, spots):
        tip = f"#{number}: {x:.1f} KiB, {y_label} {y:.4f}"
        parts.append(f'<g class="marker"><circle cx="{mx:.1f}" cy="{my:.1f}" r="{MARKER_R}" fill="#2a6fdb">'
                     f'<title>{html.escape(tip)}</title></circle><text x="{mx:.1f}" y="{my + 4:.1f}" '
                     f'font-size="11" fill="#fff" text-anchor="middle">{number}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


LOG_FLOOR, LOG_CEILING = -4, 1  # the layer plot's decades: 1e-4 (and below) to 10


def _layer_plot(report: dict) -> str:
    """SVG bars, log scale: each layer's error relative to the signal, in graph order (0.01 is 1%;
    healthy int8 layers sit near 0.01, a lost layer near 1); layers kept in float in orange."""
    rows = report.get("layer_errors") or []
    if not rows:
        return ""
    height, pad, top = 190, 44, 16
    span = height - pad - top
    step = (LAYER_WIDTH - pad - 12) / len(rows)

    def sy(value: float) -> float:
        decades = min(max(math.log10(max(value, 10.0 ** LOG_FLOOR)), LOG_FLOOR), LOG_CEILING)
        return height - pad - (decades - LOG_FLOOR) / (LOG_CEILING - LOG_FLOOR) * span

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{LAYER_WIDTH}" height="{height}" role="img" '
             f'class="layers"><line x1="{pad}" y1="{height - pad}" x2="{LAYER_WIDTH - 12}" '
             f'y2="{height - pad}" stroke="#444"/><line x1="{pad}" y1="{top}" x2="{pad}" y2="{height - pad}" '
             f'stroke="#444"/><text x="{(LAYER_WIDTH + pad) / 2}" y="{height - 8}" text-anchor="middle" '
             f'font-size="12">error by layer, graph order ({html.escape(report["target"])})</text>']
    for decade in range(LOG_FLOOR, LOG_CEILING + 1):
        y = sy(10.0 ** decade)
        parts.append(f'<line x1="{pad - 3}" y1="{y:.1f}" x2="{LAYER_WIDTH - 12}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{pad - 5}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{10.0 ** decade:g}</text>')
    for i, row in enumerate(rows):
        y = sy(row["error"])
        colour = "#e8871e" if row.get("kept_float") else "#2a6fdb"
        tip = f"#{row['index']} {row['op']} {row['tensor']}: error {row['error']:.4g}" + \
            (", kept in float" if row.get("kept_float") else "")
        parts.append(f'<rect x="{pad + i * step + step * 0.1:.1f}" y="{y:.1f}" width="{max(step * 0.8, 1):.1f}" '
                     f'height="{height - pad - y:.1f}" fill="{colour}"><title>{html.escape(tip)}</title></rect>')
    every = max(1, math.ceil(len(rows) / 12))
    for i in range(0, len(rows), every):
        parts.append(f'<text x="{pad + (i + 0.5) * step:.1f}" y="{height - pad + 13}" font-size="10" '
                     f'text-anchor="middle">{rows[i]["index"]}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _worst_table(report: dict) -> str:
    from tfbuild.layer_error import worst

    rows = report.get("layer_errors") or []
    if not rows:
        return ""
    cells = []
    for row in worst(rows, WORST_LAYERS):
        steps = f"{row['rmse_scale']:.3g}" if row["rmse_scale"] is not None else "float"
        values = [f"#{row['index']}", row["op"], f"{row.get('cost', 0.0):.3f}", f"{row['error']:.4f}",
                  f"{row['local_error']:.4f}", steps, "yes" if row.get("kept_float") else "", row["tensor"]]
        cells.append("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in values) + "</tr>")
    info = report.get("float_fallback") or {}
    search = f", search: {info['search']} ({info.get('trials', 0)} trial(s))" if info.get("search") else ""
    return (f"<p><b>{html.escape(report['target'])}</b>: worst layers of the fully quantized model; "
            f"float_fallback: {html.escape(str(info.get('mode', 'none')))}{html.escape(search)}, "
            f"{len(info.get('layers') or [])} kept in float</p><table class='worst'><thead><tr><th>layer</th>"
            "<th>op</th><th>cost</th><th>error</th><th>local error</th><th>rmse/scale</th><th>kept in float</th>"
            f"<th>output tensor</th></tr></thead><tbody>{''.join(cells)}</tbody></table>")


def _row(number: int | None, plan, report: dict | None, float_size: int | None) -> str:
    from tfbuild.report import headline_metrics

    if report is None:
        return f"<tr><td></td><td>{html.escape(plan.name)}</td><td colspan='10'>not built</td></tr>"
    outputs = (report.get("metrics") or {}).get("outputs") or {}
    ties = ", ".join(f"{m['near_ties']}" + (f" ({name})" if len(outputs) > 1 else "")
                     for name, m in outputs.items() if "near_ties" in m)
    timings = report.get("timings") or {}
    took = sum(v for k, v in timings.items() if k in ("convert_s", "layers_and_fallback_s", "verify_s"))
    kept = len((report.get("float_fallback") or {}).get("layers") or [])
    cells = ["" if number is None else str(number), plan.name,
             report["quantize"] + ("" if report["io"] == "float32" else f" (io {report['io']})"),
             f"{report['size_bytes'] / 1024:.1f} KiB",
             f"{report['size_bytes'] / float_size:.2f}x" if float_size else "",
             headline_metrics(report), ties,
             f"{report['latency_ms']:.3f} ms" if report.get("latency_ms") is not None else "",
             f"{took:.1f}s" if timings else "", str(kept) if "float_fallback" in report else "",
             report["verdict"], "; ".join(report.get("failures") or report.get("warnings") or []),
             report.get("evaluated_on", "")]
    return "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


def _tensor_text(tensor: dict) -> str:
    """One tensor's metadata in a line: `image: image rgb, mean [0] std [1], range [0, 255]`."""
    parts = [tensor["content"] + (f" {tensor['color_space']}" if tensor.get("color_space") else "")]
    def numbers(values: list[float]) -> str:
        return "[" + ", ".join(f"{v:g}" for v in values) + "]"
    if tensor.get("normalization"):
        parts.append(f"mean {numbers(tensor['normalization']['mean'])} std {numbers(tensor['normalization']['std'])}")
    if tensor.get("range"):
        parts.append(f"range {numbers(tensor['range']['min'])}..{numbers(tensor['range']['max'])}")
    if tensor.get("labels"):
        parts.append(f"{tensor['labels']['count']} labels ({tensor['labels']['file']})")
    return f"{tensor['name']}: " + ", ".join(parts)


def _metadata_table(reports: list[tuple]) -> str:
    """The TFLite metadata each target's file carries, as read back from it after writing."""
    rows = []
    for plan, report in reports:
        meta = (report or {}).get("metadata")
        if not meta:
            continue
        scores = meta.get("scores") or {}
        values = [plan.name, meta.get("name") or "", meta.get("version") or "", meta.get("author") or "",
                  meta.get("license") or "", "; ".join(_tensor_text(t) for t in meta["inputs"]),
                  "; ".join(_tensor_text(t) + (f", {scores[t['name']]}" if t["name"] in scores else "")
                            for t in meta["outputs"])]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>")
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("target", "name", "version", "author", "license", "inputs", "outputs"))
    return (f"<p><b>TFLite metadata</b> (read back from each built file)</p><table class='metadata'><thead>"
            f"<tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


HEADER = ("#", "target", "mode", "size", "vs fp32", "metrics", "near-ties", "latency (median)", "time",
          "float layers", "verdict", "notes", "evaluated on")


def _section(recipe: str, members: list, shown: dict[str, dict | None]) -> str:
    reports = [(plan, shown[plan.id] if plan.id in shown else plan.read_output(REPORT_FILE)) for plan in members]
    float_size = next((r["size_bytes"] for _, r in reports if r and r.get("quantize") == "float32"), None)
    points, label, rows, numbered = [], "quality", [], 0
    for plan, report in reports:
        quality = report and _quality(report)
        number = None
        if quality:
            numbered += 1
            number, label = numbered, quality[0]
            points.append((number, report["size_bytes"] / 1024, quality[1]))
        rows.append(_row(number, plan, report, float_size))
    built = [r for _, r in reports if r]
    reference = _reference(built, label)
    legend = (f"<p class='legend'>Markers are numbered as the table's # column; the dashed line is the "
              f"float32 source model ({html.escape(label)} {reference:.4f}).</p>" if reference is not None else "")
    layers = [r for r in built if r.get("layer_errors")]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    return (f"<section><h2>{html.escape(recipe)}</h2><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{_metadata_table(reports)}<div class='plots'><div>{_scatter(points, label, reference)}"
            f"{legend}</div>{''.join(f'<div>{_layer_plot(r)}</div>' for r in layers)}</div>"
            f"{''.join(_worst_table(r) for r in layers)}{_missing_layers(built)}</section>")


def _missing_layers(reports: list[dict]) -> str:
    """Integer targets whose per-layer figures could not be measured, and how to get them."""
    return "".join(f"<p class='legend'>{html.escape(r['target'])}: {html.escape(r['layer_errors_missing'])}</p>"
                   for r in reports if r.get("layer_errors_missing"))


def render(plans, reports: dict[str, dict | None] | None = None) -> str:
    """The page; `reports` by target id (a rejected target's is the rejected file's), else each
    target's report.json beside its output."""
    by_recipe: dict[str, list] = {}
    for plan in plans:
        by_recipe.setdefault(plan.loaded.name, []).append(plan)
    sections = [_section(recipe, members, reports or {}) for recipe, members in by_recipe.items()]
    style = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}"
             "th{background:#f4f4f4}.plots{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}"
             ".legend{font-size:0.9em;color:#555;max-width:520px}table.worst td:last-child{font-size:0.85em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tfbuild report</title>"
            f"<style>{style}</style></head><body><h1>tfbuild report</h1>{''.join(sections)}</body></html>\n")


def write_report(plans, path: Path, reports: dict[str, dict | None] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(plans, reports), encoding="utf-8")
    tmp.replace(path)
