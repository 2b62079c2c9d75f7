#!/usr/bin/env python3
"""Scenario 7 of scripts/bench.sh: stops the sink's PostgreSQL mid-run, starts it again after
--down seconds, and measures how fast the backlog drains compared with the steady rate.

    outage.py --pg URL --records N --at FRACTION --down SECONDS --pid PID --out FILE.json
              --stop 'COMMAND' --start 'COMMAND' [--kafka BROKERS --topic-prefix PREFIX]

Runs beside the measured `sluice run` (PID: the measuring process; the watch ends when it
exits). Rows written are read from the sink's ledger (`sum(rows)` of `_sluice_ledger`, one
row per batch: cheap to read every half second, unlike a count of the table). Timeline:
- steady: from the moment 10% of the records are written until FRACTION of them are, the
  sink writing while the source reads (rows/s = the steady rate; a source faster than the
  sink is ahead of it by then, and the Kafka watermarks below show by how much);
- outage: the server is stopped (`--stop`) for --down seconds; the source goes on reading
  into Kafka (`when_link_down: buffer`), the sink retries its batch;
- catch-up: from the restart (`--start`) until every record is written: the backlog (what
  Kafka holds and the sink has not written) drains; rows/s over that span, from the
  restart (reconnection included) and from the first row written after it.
Kafka's high watermarks at the steady phase's start and end and at the restart say how many
batches the source had published by then: whether the source was still reading in the
steady phase (if it had published everything before it began, the steady phase is the
sink writing a backlog too, and the ratio compares the sink with itself) and while the
backlog drained. The CPU each kind of
process used (Sluice, PostgreSQL, Kafka, the mock API; from /proc) is given per million
rows written, for the steady phase and for the drain: what bounds the drain's rate beside
the steady rate when they share the machine's cores.
"""

import argparse
import json
import os
import shlex
import subprocess
import time

import psycopg

LEDGER = """
SELECT coalesce(sum(rows), 0)::bigint FROM {}
"""


def ledger_rows(conn):
    row = conn.execute(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
        "WHERE tablename = '_sluice_ledger' LIMIT 1"
    ).fetchone()
    if not row:
        return 0
    return conn.execute(LEDGER.format(row[0])).fetchone()[0]


class Reader:
    """Rows written, read through a connection opened again whenever it breaks."""

    def __init__(self, url):
        self.url = url
        self.conn = None

    def rows(self):
        try:
            if self.conn is None:
                self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
            return ledger_rows(self.conn)
        except psycopg.Error:
            if self.conn is not None:
                try:
                    self.conn.close()
                except psycopg.Error:
                    pass
            self.conn = None
            return None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def cpu_snapshot():
    """CPU seconds (user + system) of every live process of interest, by pid:
    `(who, seconds)`, who one of sluice, postgres, kafka, mock-api."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if "mock-api" in cmd:
            who = "mock-api"
        elif " run " in cmd and "sluice" in cmd:
            who = "sluice"
        elif comm.startswith("postgres") or cmd.startswith("postgres:"):
            who = "postgres"
        elif "kafka.Kafka" in cmd:
            who = "kafka"
        else:
            continue
        out[int(entry)] = (who, (int(fields[11]) + int(fields[12])) / tick)
    return out


def machine_snapshot():
    """The machine's CPU time by state since boot (the first line of /proc/stat, in ticks):
    user, nice, system, idle, iowait, irq, softirq, steal."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def machine_share(start, end):
    """How the machine's cores spent an interval, in percent: busy (user, nice, system,
    interrupts), waiting for I/O, idle, and stolen by the hypervisor for other machines
    (time a noisy host takes: the figures of a run with much of it are not comparable)."""
    d = [b - a for a, b in zip(start, end)]
    total = sum(d) or 1
    pct = lambda x: round(100 * x / total, 1)  # noqa: E731
    return {
        "busy": pct(d[0] + d[1] + d[2] + d[5] + d[6]),
        "iowait": pct(d[4]),
        "idle": pct(d[3]),
        "steal": pct(d[7]),
    }


def cpu_per_million(start, end, rows):
    """CPU seconds per million rows between two snapshots, by process kind. A process
    that ended in between is not counted (PostgreSQL's backends live for the run)."""
    if rows <= 0:
        return None
    spent = {}
    for pid, (who, secs) in end.items():
        before = start.get(pid, (who, 0.0))[1]
        spent[who] = spent.get(who, 0.0) + max(secs - before, 0.0)
    return {who: round(s * 1e6 / rows, 2) for who, s in sorted(spent.items())}


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def published_batches(brokers, prefix):
    """Messages in the topics whose name starts with PREFIX (high watermarks summed)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-outage-watch"})
    try:
        total = 0
        for name, meta in c.list_topics(timeout=10).topics.items():
            if not name.startswith(prefix):
                continue
            for p in meta.partitions:
                _, high = c.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                total += high
        return total
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg", required=True)
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--at", type=float, default=0.3)
    ap.add_argument("--down", type=float, default=60)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stop", required=True)
    ap.add_argument("--start", required=True)
    ap.add_argument("--kafka")
    ap.add_argument("--topic-prefix")
    ap.add_argument("--pg-settings", default="",
                    help="the private server's settings other than initdb's (for the report)")
    a = ap.parse_args()

    def published(result, key):
        """Notes how many batches the source had published by now (informative only)."""
        if a.kafka and a.topic_prefix:
            try:
                result[key] = published_batches(a.kafka, a.topic_prefix)
            except Exception as e:
                result["kafka_error"] = str(e)

    reader = Reader(a.pg)
    t0 = time.monotonic()
    samples = []  # (seconds since t0, rows)

    def sample():
        rows = reader.rows()
        if rows is not None:
            samples.append((round(time.monotonic() - t0, 3), rows))
        return rows

    result = {"records": a.records, "at": a.at, "down_s": a.down,
              "pg_settings": a.pg_settings.split()}
    steady_from = None
    # Steady phase: until FRACTION of the records are written.
    while alive(a.pid):
        rows = sample()
        if rows is not None and rows >= 0.1 * a.records and steady_from is None:
            steady_from = samples[-1]
            cpu_from = cpu_snapshot()
            machine_from = machine_snapshot()
            result["rows_at_steady_start"] = rows
            published(result, "batches_published_at_steady_start")
        if rows is not None and rows >= a.at * a.records:
            break
        time.sleep(0.5)
    if steady_from is None or not alive(a.pid):
        result["error"] = "the run ended (or never got going) before the outage"
        json.dump(result, open(a.out, "w"))
        return
    steady_to = samples[-1]
    result["steady_cpu_s_per_m"] = cpu_per_million(
        cpu_from, cpu_snapshot(), steady_to[1] - steady_from[1]
    )
    result["steady_machine"] = machine_share(machine_from, machine_snapshot())
    result["steady_rows_per_s"] = round(
        (steady_to[1] - steady_from[1]) / max(steady_to[0] - steady_from[0], 1e-3), 1
    )
    published(result, "batches_published_at_steady_end")
    # The outage.
    reader.close()
    t_stop = time.monotonic() - t0
    subprocess.run(shlex.split(a.stop), check=True, capture_output=True)
    result["rows_at_stop"] = steady_to[1]
    time.sleep(a.down)
    published(result, "batches_published_at_restart")
    subprocess.run(shlex.split(a.start), check=True, capture_output=True)
    t_up = time.monotonic() - t0
    result["outage_s"] = round(t_up - t_stop, 2)
    rows_up = None
    first = None
    done = None
    while True:
        rows = sample()
        if rows is not None:
            if rows_up is None:
                rows_up = rows
            if first is None and rows > steady_to[1]:
                first = samples[-1]
                cpu_first = cpu_snapshot()
                machine_first = machine_snapshot()
            if rows >= a.records:
                done = samples[-1]
                if first is not None and first is not done:
                    result["drain_cpu_s_per_m"] = cpu_per_million(
                        cpu_first, cpu_snapshot(), done[1] - first[1]
                    )
                    result["drain_machine"] = machine_share(machine_first, machine_snapshot())
                break
        if not alive(a.pid):
            rows = sample()
            if rows is not None and rows >= a.records:
                done = samples[-1]
            break
        time.sleep(0.25)
    reader.close()
    result["rows_at_restart"] = rows_up
    result["samples"] = samples
    if done is None or first is None:
        result["error"] = "the run ended before every record was written"
    else:
        backlog = done[1] - steady_to[1]
        result["backlog_rows"] = backlog
        result["reconnect_s"] = round(first[0] - t_up, 2)
        result["catchup_s"] = round(done[0] - t_up, 2)
        result["catchup_rows_per_s"] = round(backlog / max(done[0] - t_up, 1e-3), 1)
        result["drain_rows_per_s"] = round(
            (done[1] - first[1]) / max(done[0] - first[0], 1e-3), 1
        )
        result["catchup_x_steady"] = round(
            result["catchup_rows_per_s"] / max(result["steady_rows_per_s"], 1e-3), 2
        )
        result["drain_x_steady"] = round(
            result["drain_rows_per_s"] / max(result["steady_rows_per_s"], 1e-3), 2
        )
    json.dump(result, open(a.out, "w"))


if __name__ == "__main__":
    main()
