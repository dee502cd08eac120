#!/usr/bin/env python3
"""Pools the per-repetition ratios of one or more microseg-compare runs.

    scripts/ab/pool.py RUN1.err[,RUN2.err...] ...

Reads the "rules N rep R CONTENDER cps ... tcp1 ..." lines microseg-compare prints on
stderr, forms each contender's ratio to no filter of the same repetition, and prints per
rule count and pooled over all of them the median and a distribution-free interval for it
(the order statistics x(k) and x(n+1-k) with the largest k whose coverage is at least 90 %,
as microseg-compare's targets print them). Comma-separated files are pooled together.
"""
import math
import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r"rules\s+(\d+) rep (\d+) (.{13}) cps\s+(\d+) .*?tcp1\s+([\d.]+) tcp4")


def interval(v, min_coverage=0.9):
    v, n, best, below = sorted(v), len(v), None, 0.0
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) / 2**n
        if 1 - 2 * below < min_coverage:
            break
        best = (v[k - 1], v[n - k], 1 - 2 * below)
    return best


def ratios(files):
    out = defaultdict(lambda: defaultdict(list))  # (contender, measure) -> rules -> ratios
    for f in files:
        reps = defaultdict(dict)
        for line in open(f):
            if m := LINE.match(line):
                reps[(int(m[1]), int(m[2]))][m[3].strip()] = (float(m[4]), float(m[5]))
        for (rules, _), row in reps.items():
            base = row.get("no filter")
            for who, got in row.items():
                if base and who != "no filter":
                    out[(who, "conn/s")][rules].append(got[0] / base[0])
                    out[(who, "tcp1")][rules].append(got[1] / base[1])
    return out


def show(v):
    i = interval(v)
    ci = f" [{i[0]:.3f}-{i[1]:.3f}, {i[2] * 100:.0f}%]" if i else ""
    return f"{statistics.median(v):.3f}{ci}"


for arg in sys.argv[1:]:
    r = ratios(arg.split(","))
    print(arg)
    for who in ["empty tc prog", "microseg", "iptables-nft", "nftables"]:
        for what in ["conn/s", "tcp1"]:
            per = r[(who, what)]
            pooled = [x for n in per for x in per[n]]
            if not pooled:
                continue
            rows = "  ".join(f"{n}: {show(per[n])}" for n in sorted(per))
            print(f"  {who:<13} {what:<6} {rows}  | pooled n={len(pooled)}: {show(pooled)}")
