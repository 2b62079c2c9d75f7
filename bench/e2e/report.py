#!/usr/bin/env python3
"""The markdown report of scripts/bench.sh, and its place in docs/benchmarks.md.

    report.py --results FILE.jsonl --root REPO --bin SLUICE --pg URL --records N --runs K \
              --scenarios LIST --faults LIST --fault-config FILE   > report.md
    report.py --insert report.md docs/benchmarks.md

The second form replaces what lies between the `scripts/bench.sh` markers of the page (or,
the first time, puts the report before the page's first `## ` section).
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from importlib import metadata

BEGIN = "<!-- scripts/bench.sh:begin (generated: edit bench/e2e/report.py, not this) -->"
END = "<!-- scripts/bench.sh:end -->"

NAMES = {
    1: "Sluice: HTTP → Kafka → PostgreSQL upsert",
    2: "Sluice: HTTP → embedded buffer → PostgreSQL upsert",
    3: "Sluice: HTTP → PostgreSQL, no buffer",
    4: "ceiling: psql `\\copy` of the pre-rendered CSV",
    5: "peer: dlt `rest_api` → PostgreSQL merge",
    6: "hand-written: requests + confluent-kafka + psycopg COPY",
    8: "Sluice: HTTP → embedded buffer → PostgreSQL append",
    9: "Sluice: HTTP → embedded buffer → PostgreSQL upsert, through a slow link",
}
SHORT = {1: "Sluice (Kafka)", 2: "Sluice (embedded)", 4: "ceiling", 5: "dlt", 6: "hand-written",
         8: "Sluice (embedded, append)", 9: "Sluice (embedded, slow link)"}
# The table's order: 8 and 9 beside 2, the same pipeline but for the mode or the link.
ORDER = [1, 2, 8, 9, 3, 4, 5, 6]


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception:  # noqa: BLE001 - a missing fact is left blank
        return ""


def version(pkg):
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "?"


def median(xs):
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "—"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def ok(r):
    checked = r.get("checksum_ok") is True or r["variant"] == "memory"
    return r["rc"] == 0 and checked and r["rows"] == r["records"]


def summarize(rows):
    good = [r for r in rows if ok(r)]
    n = good[0]["records"] if good else None
    per_m = lambda key: median([r[key] / r["records"] * 1e6 for r in good])  # noqa: E731
    return {
        "runs": len(rows),
        "ok": len(good),
        "rate": median([r["records"] / r["wall"] for r in good]),
        "rates": [r["records"] / r["wall"] for r in good],
        "wall": median([r["wall"] for r in good]),
        "cpu": median([(r["cpu_user"] + r["cpu_sys"]) / r["records"] * 1e6 for r in good]),
        "rss": median([r["maxrss_kb"] / 1024 for r in good]),
        "db": per_m("db_cpu"),
        "kafka": per_m("kafka_cpu"),
        "records": n,
        "failures": [r for r in rows if not ok(r)],
        "good": good,
    }


def failure_text(r):
    if r["rc"] == 124:
        return "timed out"
    if r["rc"] != 0:
        return f"exit {r['rc']}"
    if r["rows"] != r["records"]:
        return f"{r['rows']:,} rows of {r['records']:,}"
    return "checksum differs"


def node_timings(good):
    """Median per-node elapsed seconds and records of Sluice's run summaries, if present."""
    per = {}
    for r in good:
        for n in r.get("nodes") or []:
            name = n.get("node") or n.get("id") or n.get("name")
            el = n.get("elapsed")
            if isinstance(el, dict):
                el = el.get("secs", 0) + el.get("nanos", 0) / 1e9
            if name is not None and isinstance(el, (int, float)):
                per.setdefault(name, []).append(el)
    return {k: median(v) for k, v in per.items()}


def render(a):
    results = [json.loads(line) for line in open(a.results) if line.strip()]
    scenarios = [int(s) for s in a.scenarios.split(",") if s]
    faults = [int(s) for s in a.faults.split(",") if s]
    groups = {}
    for r in results:
        groups.setdefault((r["scenario"], r["variant"]), []).append(r)
    summ = {k: summarize(v) for k, v in groups.items()}

    out = []
    w = out.append
    w(BEGIN)
    w("## End to end (`scripts/bench.sh`)")
    w("")
    cores = os.cpu_count()
    mem = ""
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    cpu = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    osname = ""
    if os.path.exists("/etc/os-release"):
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip().strip('"')
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    sluice = sh(a.bin, "--version") or "sluice"
    if a.given_bin:
        build = f"binary given with `--bin`: `{os.path.basename(a.bin)}`"
    else:
        build = "commit " + sh("git", "-C", a.root, "rev-parse", "--short", "HEAD")
        if sh("git", "-C", a.root, "status", "--porcelain", "--untracked-files=no"):
            build += " plus uncommitted changes in the tree"
    pg = sh("psql", a.pg, "-X", "-A", "-t", "-c", "SHOW server_version").split(" ")[0]
    kafka = ""
    pom = os.path.join(a.root, "scripts/kafka/pom.xml")
    if os.path.exists(pom):
        m = re.search(r"<kafka.version>([^<]+)<", open(pom).read())
        kafka = m.group(1) if m else ""
    try:
        import confluent_kafka

        librdkafka = confluent_kafka.libversion()[0]
    except Exception:  # noqa: BLE001
        librdkafka = "?"
    date = sh("date", "-u", "+%Y-%m-%d")

    w(f"Machine: {cores} cores ({cpu}), {mem}, {osname}, kernel {platform.release()}; "
      f"PostgreSQL {pg} and Kafka {kafka} (single node, KRaft) on the same machine; "
      f"load average when the report was written {load}; {date}.")
    w(f"Versions: {sluice} (release build; {build}); dlt {version('dlt')}; "
      f"Python {platform.python_version()} with requests {version('requests')}, "
      f"confluent-kafka {version('confluent-kafka')} (librdkafka {librdkafka}), "
      f"psycopg {version('psycopg')}.")
    n = a.records
    w(f"Data: `sluice mock-api` serving **N = {n:,}** order records (~500 bytes of nested JSON "
      f"each), pages of 1,000, cursor pagination, on 127.0.0.1. Each figure is the median of "
      f"{a.runs} run(s) (`scripts/bench.sh --records {n} --runs {a.runs}`); every run "
      f"loads a fresh table with primary key `id` and is checked: row count and md5 over "
      f"`id:updated_at` in id order equal to the source's.")
    w("")
    w("CPU is that of the tool's own processes (user + system, children included), per "
      "million records; PostgreSQL's and Kafka's CPU in the same interval are apart (and "
      "include whatever else used the shared services then). Peak RSS is the largest "
      "process's. The mock API runs on the same 2 cores. Sluice, the ceiling and the "
      "hand-written script load a table made by `bench/e2e/table.sql` (timestamps as "
      "`timestamptz`, nested values as `jsonb`); dlt makes its own of the same types, plus "
      "its `_dlt_load_id`/`_dlt_id` columns, and merges on `id` without a primary key "
      "constraint (its default).")
    w("")
    w("| # | scenario | API | records/s | (min–max) | wall s | CPU s / M rec | peak RSS MiB | "
      "PostgreSQL CPU s / M | Kafka CPU s / M | check |")
    w("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in ORDER:
        if s not in scenarios:
            continue
        if s == 3:
            w(f"| 3 | {NAMES[3]} | — | not run | | | | | | | the engine always has a buffer: "
              "`buffer:` is `embedded` (the default) or `kafka`, no third kind |")
            continue
        for variant in ["none", "faults"]:
            if variant == "faults" and s not in faults:
                continue
            g = summ.get((s, variant))
            api = "flaky" if variant == "faults" else "clean"
            if g is None:
                w(f"| {s} | {NAMES[s]} | {api} | not measured | | | | | | | |")
                continue
            check = f"{g['ok']}/{g['runs']} runs ok"
            if g["failures"]:
                check += " (" + ", ".join(sorted({failure_text(r) for r in g["failures"]})) + ")"
            if s == 4 and variant == "none":
                api = "file"
            spread = (f"{fmt(min(g['rates']))}–{fmt(max(g['rates']))}"
                      if len(g["rates"]) > 1 else "")
            w(f"| {s} | {NAMES[s]} | {api} | {fmt(g['rate'])} | {spread} | {fmt(g['wall'], 1)} | "
              f"{fmt(g['cpu'], 1)} | {fmt(g['rss'])} | {fmt(g['db'], 1)} | "
              f"{fmt(g['kafka'], 1) if s in (1, 6) else '—'} | {check} |")
    w("")

    # Ratios.
    def ratio(x, y):
        if x is None or y is None or x == 0 or y == 0:
            return "—"
        return f"{x / y:.2f}×"

    def paired(me, other):
        """Median of the records/s ratios of runs with the same number: runs are
        interleaved, so each pair ran under the machine's load of the same minutes."""
        mine = {r["run"]: r["records"] / r["wall"] for r in me["good"]}
        theirs = {r["run"]: r["records"] / r["wall"] for r in other["good"]}
        both = sorted(set(mine) & set(theirs))
        if not both:
            return "—"
        return f"{median([mine[k] / theirs[k] for k in both]):.2f}×"

    lines = []
    for s in (1, 2, 8):
        for variant in ("none", "faults"):
            me = summ.get((s, variant))
            if not me or me["rate"] is None:
                continue
            refs = [(4, "none")] if variant == "none" else []
            # dlt and the hand-written job upsert: 8 (append) is set beside the ceiling only.
            if s != 8:
                refs += [(5, variant), (6, variant)]
            for ref in refs:
                other = summ.get(ref)
                if not other or other["rate"] is None:
                    continue
                api = " (flaky API)" if variant == "faults" else ""
                cpu = "—" if ref[0] == 4 else ratio(me["cpu"], other["cpu"])
                rss = "—" if ref[0] == 4 else ratio(me["rss"], other["rss"])
                lines.append(f"| {SHORT[s]} / {SHORT[ref[0]]}{api} | "
                             f"{ratio(me['rate'], other['rate'])} | {paired(me, other)} | "
                             f"{cpu} | {rss} |")
    if lines:
        w("Ratios (Sluice ÷ reference; records/s above 1× is faster, CPU and RSS below 1× "
          "is cheaper). \"paired\" is the median of the ratios of runs with the same number, "
          "which ran minutes apart under the same load; the other columns divide medians:")
        w("")
        w("| ratio | records/s | records/s, paired | CPU s / M records | peak RSS |")
        w("|---|---:|---:|---:|---:|")
        out.extend(lines)
        w("")

    link, near = summ.get((9, "none")), summ.get((2, "none"))
    if link and near and link["rate"] and near["rate"]:
        w(f"Scenario 9 is scenario 2 with PostgreSQL reached through `bench/e2e/latency_proxy.py`, "
          f"which delays each chunk {a.link_delay_ms:g} ms each way ({2 * a.link_delay_ms:g} ms "
          f"a round trip), as a database in another rack or zone would: "
          f"{link['rate'] / near['rate']:.2f}× scenario 2's records/s (medians).")
        w("")

    mem = summ.get((2, "memory"))
    base = summ.get((2, "none"))
    if mem is not None:
        r = mem["failures"][0] if mem["failures"] else (mem["good"][0] if mem["good"] else None)
        if r:
            if r["rc"] == 0 and r["rows"] == r["records"]:
                status = "all rows there"
            else:
                status = failure_text(r)
            note = ""
            cpu = (r["cpu_user"] + r["cpu_sys"]) / r["records"] * 1e6
            w(f"Memory check (scenario 2, once): {r['records']:,} records → peak RSS "
              f"**{r['maxrss_kb'] / 1024:,.0f} MiB**, {cpu:,.1f} CPU s / M records, "
              f"{r['records'] / r['wall']:,.0f} records/s ({r['wall']:,.0f} s; {status}{note})"
              + (f", against {fmt(base['rss'])} MiB for {n:,} records." if base and
                 base["rss"] else "."))
            w("")

    outage = [r for r in results if r["scenario"] == 7]
    if outage:
        good = [r for r in outage if r["rc"] == 0 and r["rows"] == r["records"]
                and "catchup_rows_per_s" in r.get("outage", {})]
        o = [r["outage"] for r in good]
        first = outage[0].get("outage", {})

        def med(key, digits=0):
            xs = [x[key] for x in o if x.get(key) is not None]
            return fmt(median(xs), digits) if xs else "—"

        settings = first.get("pg_settings") or []
        server = ("private PostgreSQL (initdb's settings but "
                  + ", ".join(f"`{x}`" for x in settings) + ")") if settings \
            else "private PostgreSQL"
        w(f"Catch-up after a PostgreSQL outage (scenario 7: scenario 1's pipeline into a "
          f"{server} stopped for {first.get('down_s', 60):.0f} s once "
          f"{first.get('at', 0.3):.0%} of {outage[0]['records']:,} records were written; "
          f"`when_link_down: buffer`, the sink retrying its batch; medians of {len(o)} of "
          f"{len(outage)} run(s)):")
        w("")
        w("| steady records/s | outage s | backlog records | reconnect s | catch-up s | "
          "catch-up records/s | × steady | drain records/s (from the first write) | "
          "× steady | check |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        bad = [failure_text(r) if r["rc"] != 0 or r["rows"] != r["records"]
               else r.get("outage", {}).get("error", "no outage figures") for r in outage
               if r not in good]
        check = f"{len(good)}/{len(outage)} runs ok" + (
            " (" + ", ".join(sorted(set(bad))) + ")" if bad else "")
        w(f"| {med('steady_rows_per_s')} | {med('outage_s', 1)} | {med('backlog_rows')} | "
          f"{med('reconnect_s', 1)} | {med('catchup_s', 1)} | {med('catchup_rows_per_s')} | "
          f"{med('catchup_x_steady', 2)}× | {med('drain_rows_per_s')} | "
          f"{med('drain_x_steady', 2)}× | {check} |")
        w("")
        # Where the source was when the steady phase began: far ahead of the sink (a run
        # bound by the sink throughout), or keeping it fed (the sink keeping pace).
        keys = ("rows_at_steady_start", "batches_published_at_steady_start",
                "batches_published_at_restart")
        ahead = [x for x in o if all(x.get(k) for k in keys)]
        if ahead:
            per_batch = [x["records"] / x["batches_published_at_restart"] for x in ahead]
            shares = [x["batches_published_at_steady_start"] * b / x["rows_at_steady_start"]
                      for x, b in zip(ahead, per_batch)]
            w("When the steady phase began, the source had published "
              + ", ".join(f"{x['batches_published_at_steady_start']:,}" for x in ahead)
              + f" of its {ahead[0]['batches_published_at_restart']:,} batches (run by run), "
              "that is " + ", ".join(f"{s:.1f}" for s in shares)
              + "× the rows the sink had written. "
              + ("The source outran the sink: the run is bound by the sink in the steady "
                 "phase as in the drain, so × steady compares the sink with itself, with and "
                 "without the source's share of the cores." if min(shares) > 1.5 else
                 "The sink kept pace with the source."))
            w("")
        kinds = ["sluice", "postgres", "kafka", "mock-api"]

        def cpu(phase, kind):
            xs = [x[phase][kind] for x in o if x.get(phase) and kind in x[phase]]
            return median(xs) if xs else None

        if any(x.get("steady_cpu_s_per_m") for x in o):
            w("CPU per million rows written in each phase (user + system seconds, from /proc; "
              "medians), by process: the steady phase carries the source's side (the mock API, "
              "Sluice's reads and publishes), the drain only the sink's:")
            w("")
            w("| phase | Sluice | PostgreSQL | Kafka | mock API | all | cores busy | I/O wait | "
              "stolen |")
            w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            totals = {}
            busy = {}
            for phase in ("steady", "drain"):
                xs = [cpu(f"{phase}_cpu_s_per_m", k) for k in kinds]
                totals[phase] = sum(x for x in xs if x is not None)
                cells = " | ".join(fmt(x, 1) if x is not None else "—" for x in xs)

                # The machine's cores in the phase (medians over the runs), in percent.
                machine = [x[f"{phase}_machine"] for x in o if x.get(f"{phase}_machine")]
                shares = {st: median([m[st] for m in machine]) if machine else None
                          for st in ("busy", "iowait", "steal")}
                busy[phase] = shares["busy"]
                share_cells = " | ".join(f"{fmt(v, 0)} %" if v is not None else "—"
                                         for v in shares.values())
                w(f"| {phase} | {cells} | {fmt(totals[phase], 1)} | {share_cells} |")
            w("")
            if totals.get("drain"):
                bound = totals["steady"] / totals["drain"]
                line = (f"A million rows cost the machine {fmt(totals['steady'], 1)} CPU s in the "
                        f"steady phase and {fmt(totals['drain'], 1)} in the drain: with its cores "
                        f"as busy in both, the drain runs at most about **{fmt(bound, 2)}×** the "
                        f"steady rate")
                if busy.get("steady") and busy.get("drain"):
                    line += (f" (the cores were {fmt(busy['steady'], 0)} % busy in the steady "
                             f"phase, {fmt(busy['drain'], 0)} % in the drain)")
                w(line + ". Time stolen by the hypervisor slows both phases unevenly: runs "
                  "with more than a few per cent of it are noise.")
                w("")

    if faults:
        cfg = json.load(open(a.fault_config))
        n429 = sum(1 for f in cfg["faults"] if f["kind"]["type"] == "rate_limited")
        w(f"Flaky API: {n429} of the {-(-n // 1000):,} page requests (every 50th, 2%) are "
          "answered `429` with `Retry-After: 1`, and three in a row `503` half-way; a fresh "
          "mock per run. Every tool waits at least the Retry-After seconds.")
        w("")

    timings = {}
    for s in (1, 2, 8):
        g = summ.get((s, "none"))
        if g:
            t = node_timings(g["good"])
            if t:
                timings[s] = t
    if timings:
        parts = []
        for s, t in timings.items():
            parts.append(f"{SHORT[s]}: " + ", ".join(f"`{k}` {v:,.1f} s" for k, v in t.items()))
        w("Sluice's nodes (median elapsed per node from `sluice run --json`, clean API): "
          + "; ".join(parts) + ".")
        w("")
    w("Reproduce: `scripts/bench.sh` (all of it: N = 1,000,000, 3 runs, memory check with "
      "10,000,000), or smaller with `--records`, `--runs`, `--scenarios`, `--no-faults`, "
      "`--memory-records`, `--skip-memory`. Raw results, one JSON line per run, land in "
      "`~/.cache/sluice/bench/`.")
    w(END)
    return "\n".join(out) + "\n"


def insert(report_path, doc_path):
    report = open(report_path).read().rstrip("\n")
    doc = open(doc_path).read()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc = head + report + tail
    else:
        m = re.search(r"^## ", doc, flags=re.M)
        at = m.start() if m else len(doc)
        doc = doc[:at] + report + "\n\n" + doc[at:]
    with open(doc_path, "w") as f:
        f.write(doc)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--insert":
        insert(sys.argv[2], sys.argv[3])
        return
    p = argparse.ArgumentParser()
    p.add_argument("--results", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--bin", required=True)
    p.add_argument("--given-bin", action="store_true")
    p.add_argument("--pg", required=True)
    p.add_argument("--records", type=int, required=True)
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--scenarios", default="1,2,8,3,4,5,6")
    p.add_argument("--faults", default="")
    p.add_argument("--fault-config", default="")
    p.add_argument("--link-delay-ms", type=float, default=1.0)
    sys.stdout.write(render(p.parse_args()))


if __name__ == "__main__":
    main()
