#!/usr/bin/env python3
"""Renders a Grafana dashboard's panels from a real Prometheus: every panel target's PromQL is
evaluated over a time range through Prometheus' HTTP API (/api/v1/query_range) and drawn as an
SVG line chart, laid out by the panels' gridPos. This is ebb's own small renderer of the
dashboard's queries, not Grafana: it draws lines, axes and legends, nothing else.

usage: render.py --prometheus URL --dashboard ebb.json --start UNIX --end UNIX --out page.html
"""
import argparse
import html
import json
import math
import time
import urllib.parse
import urllib.request

PALETTE = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff",
           "#fade2a", "#96d98d", "#ffa6b0", "#cca300", "#37872d"]
COL_PX = 66          # one of Grafana's 24 columns
ROW_PX = 30          # one gridPos height unit


def query_range(prom, expr, start, end, step):
    qs = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{qs}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def substitute(expr, rate_interval):
    return (expr.replace("$__rate_interval", rate_interval)
                .replace('=~"$namespace"', '=~".*"')
                .replace('=~"$scaledObject"', '=~".*"'))


def legend(fmt, labels):
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    while "{{" in out and "}}" in out:   # labels the series lacks
        a = out.index("{{")
        b = out.index("}}", a)
        out = out[:a] + out[b + 2:]
    return out.strip() or json.dumps(labels)


def fmt_value(v, unit):
    if unit == "s":
        if v == 0:
            return "0"
        return f"{v * 1000:.3g} ms" if abs(v) < 1 else f"{v:.3g} s"
    if unit == "reqps":
        return f"{v:.3g}/s"
    return f"{v:.4g}"


def legend_lines(names, width):
    """Lines the legend takes: items packed left to right (about 6 px a character)."""
    lines, used = (1 if names else 0), 0
    for name in names:
        item = 6 * len(name) + 24
        if used and used + item > width:
            lines, used = lines + 1, 0
        used += item
    return lines


def nice_max(v):
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def chart(series, start, end, w, h, unit, fixed_max):
    """An SVG line chart of [(name, [(t, v)])]."""
    left, right, top, bottom = 64, 28, 8, 22
    pw, ph = w - left - right, h - top - bottom
    vmax = fixed_max if fixed_max is not None else nice_max(
        max((v for _, pts in series for _, v in pts), default=1.0))
    x = lambda t: left + (t - start) / max(end - start, 1) * pw
    y = lambda v: top + ph - (min(v, vmax) / vmax) * ph
    out = [f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">']
    for i in range(5):
        v = vmax * i / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#2c3038"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="tick">'
                   f'{html.escape(fmt_value(v, unit))}</text>')
    for i in range(6):
        t = start + (end - start) * i / 5
        label = time.strftime("%H:%M:%S", time.gmtime(t))
        out.append(f'<text x="{x(t):.1f}" y="{h - 6}" text-anchor="middle" class="tick">{label}</text>')
    for i, (_, pts) in enumerate(series):
        if not pts:
            continue
        color = PALETTE[i % len(PALETTE)]
        # A gap of more than 3 steps breaks the line (a series that went away and came back).
        path, prev = [], None
        for t, v in pts:
            cmd = "M" if prev is None or t - prev > 3 * STEP else "L"
            path.append(f"{cmd}{x(t):.1f},{y(v):.1f}")
            prev = t
        out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="1.6"/>')
    out.append("</svg>")
    return "".join(out)


STEP = 5


def main():
    global STEP
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--end", type=float, required=True)
    ap.add_argument("--rate-interval", default="30s")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dash = json.load(open(args.dashboard))
    STEP = max(2, int((args.end - args.start) / 240))
    cells, height, queries = [], 0, 0
    for p in dash["panels"]:
        g = p["gridPos"]
        left, top = g["x"] * COL_PX, g["y"] * ROW_PX
        w, h = g["w"] * COL_PX, g["h"] * ROW_PX
        height = max(height, top + h)
        if p["type"] == "row":
            cells.append(f'<div class="row" style="left:{left}px;top:{top}px;width:{w}px">'
                         f'{html.escape(p["title"])}</div>')
            continue
        defaults = p.get("fieldConfig", {}).get("defaults", {})
        unit, fixed_max = defaults.get("unit"), defaults.get("max")
        series = []
        for target in p.get("targets", []):
            expr = substitute(target["expr"], args.rate_interval)
            queries += 1
            for r in query_range(args.prometheus, expr, args.start, args.end, STEP):
                pts = [(float(t), float(v)) for t, v in r["values"] if v not in ("NaN", "+Inf", "-Inf")]
                series.append((legend(target.get("legendFormat", ""), r["metric"]), pts))
        series.sort(key=lambda s: s[0])
        chart_h = h - 34 - 15 * legend_lines([n for n, _ in series[:12]], w - 12)
        body = chart(series, args.start, args.end, w - 12, max(chart_h, 60), unit, fixed_max) \
            if series else '<div class="nodata">No data</div>'
        items = "".join(
            f'<span class="item"><i style="background:{PALETTE[i % len(PALETTE)]}"></i>'
            f'{html.escape(name)}</span>' for i, (name, _) in enumerate(series[:12]))
        more = f'<span class="item">… {len(series) - 12} more</span>' if len(series) > 12 else ""
        cells.append(f'<div class="panel" style="left:{left}px;top:{top}px;width:{w - 6}px;height:{h - 6}px">'
                     f'<div class="title">{html.escape(p["title"])}</div>{body}'
                     f'<div class="legend">{items}{more}</div></div>')
    span = time.strftime("%Y-%m-%d %H:%M", time.gmtime(args.start)) + " – " + \
        time.strftime("%H:%M UTC", time.gmtime(args.end))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ background:#111217; color:#ccccdc; font:12px 'DejaVu Sans',sans-serif; margin:0; padding:10px; }}
h1 {{ font-size:16px; margin:0 0 2px 4px; }} .note {{ color:#8e8e9e; margin:0 0 8px 4px; }}
.grid {{ position:relative; height:{height}px; width:{24 * COL_PX}px; }}
.row {{ position:absolute; font-weight:bold; font-size:13px; padding:6px 4px; }}
.panel {{ position:absolute; background:#181b1f; border:1px solid #2c3038; border-radius:3px; padding:4px 6px; box-sizing:border-box; overflow:hidden; }}
.title {{ font-weight:bold; margin-bottom:2px; }} .tick {{ fill:#8e8e9e; font-size:10px; }}
.legend {{ font-size:10px; line-height:15px; }} .item {{ display:inline-block; margin-right:10px; white-space:nowrap; }}
.item i {{ display:inline-block; width:10px; height:3px; margin-right:4px; vertical-align:middle; }}
.nodata {{ color:#8e8e9e; padding:30px; text-align:center; }}
</style></head><body>
<h1>{html.escape(dash["title"])} — charts/ebb/dashboards/ebb.json</h1>
<div class="note">ebb's own rendering of the dashboard's {queries} queries, evaluated by Prometheus over {span}
(step {STEP} s, $__rate_interval = {args.rate_interval}); not Grafana.</div>
<div class="grid">{"".join(cells)}</div></body></html>"""
    open(args.out, "w").write(page)
    print(f"{args.out}: {len(cells)} cells, {queries} queries, page height {height + 60}px")


if __name__ == "__main__":
    main()
