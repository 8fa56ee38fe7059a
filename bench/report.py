#!/usr/bin/env python3
"""Turns bench/run.sh's raw results (round, target, metric, value per line) into Markdown.

Each figure is the median over the rounds; the ratio beside it is to nginx in the same run.
A second table checks cookiegate against the performance targets set for it. Standard library only.
"""

import statistics
import sys
from collections import defaultdict

TARGETS = ["direct", "cookiegate", "baseline", "metrics", "nginx", "haproxy", "caddy", "nextjs"]

# metric, label, format, ratio shown
ROWS = [
    ("rps64", "small GET, 64 conns: req/s", "int", True),
    ("p50_64", "small GET, 64 conns: p50 (ms)", "ms", True),
    ("p99_64", "small GET, 64 conns: p99 (ms)", "ms", True),
    ("errors64", "small GET, 64 conns: errors + non-2xx", "int", False),
    ("cpu_us", "proxy CPU per request (µs)", "f1", True),
    ("rps1", "small GET, 1 conn: req/s", "int", True),
    ("p50_1", "small GET, 1 conn: p50 (ms)", "ms", True),
    ("p99_1", "small GET, 1 conn: p99 (ms)", "ms", True),
    ("dl_mbs", "100 MiB download (MB/s)", "int", True),
    ("ul_mbs", "50 MiB upload (MB/s)", "int", True),
    ("big_mbs", "1 GiB download (MB/s)", "int", True),
    ("sse_p50", "SSE delay per event, p50 (ms)", "ms", True),
    ("sse_p99", "SSE delay per event, p99 (ms)", "ms", True),
    ("sse_add50", "SSE added over direct, p50 (ms)", "ms", False),
    ("sse_add99", "SSE added over direct, p99 (ms)", "ms", False),
    ("rss_idle", "idle RSS (MiB)", "f1", True),
    ("rss_load", "peak RSS under load (MiB)", "f1", True),
    ("rss_stream", "peak RSS streaming 1 GiB (MiB)", "f1", True),
    ("ready_ms", "start to first request served (ms)", "f1", True),
]


def load(path):
    values = defaultdict(lambda: defaultdict(list))
    failures = defaultdict(list)
    growth = {}
    rounds = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            rnd, target, metric, value = parts
            if metric == "failed":
                failures[target].append(f"round {rnd}: {value}")
                continue
            if rnd == "growth":
                growth[metric] = float(value)
                continue
            rounds.add(rnd)
            try:
                values[target][metric].append(float(value))
            except ValueError:
                continue
    return values, failures, growth, len(rounds)


def medians(values):
    med = defaultdict(dict)
    for target, metrics in values.items():
        for metric, vs in metrics.items():
            med[target][metric] = statistics.median(vs)
    for target, m in med.items():
        for kib in ("rss_idle", "rss_load", "rss_stream"):
            if kib + "_kib" in m:
                m[kib] = m[kib + "_kib"] / 1024
    direct = med.get("direct", {})
    for target, m in med.items():
        for q in ("50", "99"):
            if "sse_p" + q in m and "sse_p" + q in direct:
                m["sse_add" + q] = m["sse_p" + q] - direct["sse_p" + q]
    return med


def fmt(value, kind):
    if value is None:
        return "–"
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "ms":
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return f"{value:,.1f}"


def table(med, targets):
    out = ["| metric | " + " | ".join(targets) + " |", "|---" * (len(targets) + 1) + "|"]
    nginx = med.get("nginx", {})
    for metric, label, kind, ratio in ROWS:
        cells = []
        for t in targets:
            v = med.get(t, {}).get(metric)
            cell = fmt(v, kind)
            base = nginx.get(metric)
            if ratio and v is not None and base:
                cell += f" ({v / base:.2f}×)"
            cells.append(cell)
        if any(c != "–" for c in cells):
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def goals(med, growth):
    cg, ng, direct = med.get("cookiegate", {}), med.get("nginx", {}), med.get("direct", {})
    nx = med.get("nextjs", {})
    rows = []

    def add(name, measured, ok):
        verdict = "–" if ok is None else ("met" if ok else "**missed**")
        rows.append(f"| {name} | {measured} | {verdict} |")

    def get(m, k):
        return m.get(k)

    a, b = get(cg, "rps64"), get(ng, "rps64")
    add("small GET 64 conns: req/s ≥ 1.0× nginx", f"{a / b:.2f}×" if a and b else "–", a >= b if a and b else None)
    d = get(direct, "rps64")
    add("small GET 64 conns: req/s ≥ 0.85× direct", f"{a / d:.2f}×" if a and d else "–", a >= 0.85 * d if a and d else None)
    a, b = get(cg, "p99_64"), get(ng, "p99_64")
    add("small GET 64 conns: p99 ≤ nginx", f"{fmt(a, 'ms')} vs {fmt(b, 'ms')} ms", a <= b if a and b else None)
    a, b = get(cg, "cpu_us"), get(ng, "cpu_us")
    add("proxy CPU per request ≤ nginx", f"{fmt(a, 'f1')} vs {fmt(b, 'f1')} µs", a <= b if a and b else None)
    a, b = get(cg, "p50_1"), get(ng, "p50_1")
    add("1 conn: p50 ≤ nginx", f"{fmt(a, 'ms')} vs {fmt(b, 'ms')} ms", a <= b if a and b else None)
    a, b = get(cg, "rps64"), get(nx, "rps64")
    add("req/s ≥ 100× nextjs", f"{a / b:,.0f}×" if a and b else "–", a >= 100 * b if a and b else None)
    for metric, name in (("dl_mbs", "100 MiB download"), ("ul_mbs", "50 MiB upload")):
        best = [(med.get(t, {}).get(metric), t) for t in ("nginx", "haproxy", "caddy")]
        best = max((x for x in best if x[0]), default=None)
        a = get(cg, metric)
        if best and a:
            add(f"{name} ≥ 1.0× best of nginx/haproxy/caddy", f"{a / best[0]:.2f}× ({best[1]})", a >= best[0])
        else:
            add(f"{name} ≥ 1.0× best of nginx/haproxy/caddy", "–", None)
    a, b = get(cg, "sse_p99"), get(ng, "sse_p99")
    add("SSE delay p99 ≤ 1 ms", f"{fmt(a, 'ms')} ms", a <= 1.0 if a is not None else None)
    add("SSE delay p99 ≤ nginx's + 0.2 ms", f"{fmt(a, 'ms')} vs {fmt(b, 'ms')} ms",
        a <= b + 0.2 if a is not None and b is not None else None)
    a = get(cg, "rss_idle")
    add("idle RSS ≤ 8 MiB", f"{fmt(a, 'f1')} MiB", a <= 8 if a else None)
    a = get(cg, "rss_stream")
    add("peak RSS ≤ 16 MiB streaming 1 GiB", f"{fmt(a, 'f1')} MiB", a <= 16 if a else None)
    if growth:
        before = growth.get("growth_rss_before_kib", 0) / 1024
        after = growth.get("growth_rss_after_kib", 0) / 1024
        n = growth.get("growth_requests", 0)
        add("no RSS growth after 1 million requests (≤ 0.5 MiB over the 2nd million)",
            f"{before:.1f} MiB after the 1st million, {after:.1f} MiB after {n:,.0f}",
            n >= 2_000_000 and after - before <= 0.5)
    return "| cookiegate target | measured | |\n|---|---|---|\n" + "\n".join(rows)


def main():
    values, failures, growth, rounds = load(sys.argv[1])
    med = medians(values)
    targets = [t for t in TARGETS if t in med or t in failures]
    print(f"Medians over {rounds} round(s); in brackets, the ratio to nginx in the same run. "
          "Transfers run three times per round. MB/s are 10^6 bytes per second; MiB are 2^20 bytes.")
    print()
    print(table(med, targets))
    print()
    print(goals(med, growth))
    for target, what in failures.items():
        print(f"\n{target} failed: {', '.join(what)}")


if __name__ == "__main__":
    main()
