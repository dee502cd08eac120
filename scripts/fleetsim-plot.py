#!/usr/bin/env python3
"""Plots change p99 and controller peak RSS against node count from the fleet
simulator's figures (docs/runs/fleetsim-scaling.csv, from docs/PERFORMANCE.md section 11)
as one SVG, written by hand (standard library only).

    scripts/fleetsim-plot.py [docs/runs/fleetsim-scaling.csv] [docs/fleetsim-scaling.svg]
"""

import csv
import math
import sys

W, H = 860, 390
PANEL_W, PANEL_H = 330, 240
LEFT, TOP = 80, 50
GAP = 110
COLOURS = {"sqlite": "#1f77b4", "postgresql": "#d62728"}


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def nice_max(v):
    """The smallest of 1, 2, 5 times a power of ten at or above v."""
    if v <= 0:
        return 1.0
    p = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 5, 10):
        if m * p >= v:
            return m * p
    return 10 * p


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def panel(x0, title, ylabel, rows, key, xs):
    """One panel: x is the node count on a log scale, y linear from 0."""
    out = []
    ymax = nice_max(max(float(r[key]) for r in rows) * 1.1)
    lx0, lx1 = math.log10(min(xs)) - 0.15, math.log10(max(xs)) + 0.15

    def px(n):
        return x0 + (math.log10(n) - lx0) / (lx1 - lx0) * PANEL_W

    def py(v):
        return TOP + PANEL_H - v / ymax * PANEL_H

    out.append(
        f'<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" '
        'fill="none" stroke="#444"/>'
    )
    out.append(
        f'<text x="{x0 + PANEL_W / 2}" y="{TOP - 15}" text-anchor="middle" '
        f'font-weight="bold">{esc(title)}</text>'
    )
    for k in range(6):
        v = ymax * k / 5
        y = py(v)
        out.append(
            f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + PANEL_W}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>'
        )
    for n in xs:
        x = px(n)
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + PANEL_H}" stroke="#eee"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{TOP + PANEL_H + 18}" text-anchor="middle">{n:,}</text>'
        )
    out.append(
        f'<text x="{x0 + PANEL_W / 2}" y="{TOP + PANEL_H + 38}" text-anchor="middle">'
        "nodes (100 workloads each, log scale)</text>"
    )
    out.append(
        f'<text transform="translate({x0 - 52},{TOP + PANEL_H / 2}) rotate(-90)" '
        f'text-anchor="middle">{esc(ylabel)}</text>'
    )
    for db, colour in COLOURS.items():
        pts = sorted(
            (int(r["nodes"]), float(r[key])) for r in rows if r["db"] == db and r[key]
        )
        if not pts:
            continue
        path = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in pts)
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        for n, v in pts:
            out.append(
                f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="4" fill="{colour}">'
                f"<title>{db} {n} nodes: {v:g}</title></circle>"
            )
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "docs/runs/fleetsim-scaling.csv"
    dst = sys.argv[2] if len(sys.argv) > 2 else "docs/fleetsim-scaling.svg"
    rows = read(src)
    xs = sorted({int(r["nodes"]) for r in rows})
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
    ]
    svg += panel(
        LEFT,
        "one-rule change: last node's ack, p99",
        "ms after the apply's answer",
        rows,
        "change_p99_ms",
        xs,
    )
    svg += panel(
        LEFT + PANEL_W + GAP,
        "controller peak RSS",
        "MiB",
        rows,
        "peak_rss_mib",
        xs,
    )
    ly = H - 20
    for k, (db, colour) in enumerate(COLOURS.items()):
        x = LEFT + k * 140
        svg.append(
            f'<line x1="{x}" y1="{ly}" x2="{x + 24}" y2="{ly}" stroke="{colour}" '
            'stroke-width="2"/>'
        )
        svg.append(f'<text x="{x + 30}" y="{ly + 4}">{db}</text>')
    svg.append(
        f'<text x="{W - 10}" y="{ly + 4}" text-anchor="end" fill="#666">'
        f"{esc(src)} (docs/PERFORMANCE.md section 11)</text>"
    )
    svg.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
