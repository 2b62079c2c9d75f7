#!/usr/bin/env python3
"""PostgreSQL fed by an ideal client: how fast a server takes the benchmark's rows in binary
`COPY`s of one transaction each, on two connections, by write schedule and by how the jsonb
values' keys are ordered. It bounds what a sink could reach on the same server (docs/benchmarks.md,
"What the drain could reach").

    pg_schedules.py --source DSN --source-table bench_x.orders --target DSN [--runs 3]

The rows are read once from --source-table (a table loaded by a benchmark run, e.g. with
`scripts/bench.sh --keep-tables`), cut into pieces of --piece-rows, and written into a fresh
table `bench_schedules.orders` (the source table's columns and primary key) on --target:

  barrier  groups of two pieces, one per connection, each its own transaction; the next
           group starts when both are committed (Sluice's group write)
  free     each connection takes the next piece as soon as it committed its last one

Keys: `name` writes each jsonb value compact with object keys sorted by name (what Sluice
sends), `pg` compact with keys in jsonb's own order (shorter first, then bytewise), which
spares the server its sort of every object's keys. --gap-ms adds a pause before each group
of the barrier schedule (a client's own work between groups, which a free schedule's client
does while its connections write). CPU is the machine's (user + system from /proc/stat,
all processes): run the target on this machine, otherwise quiet. Prints a markdown table of
medians. Writes only the schema bench_schedules of --target; a CHECKPOINT before each run
(when the role may) starts every run from the same WAL state, and one run first warms up.
"""
import argparse
import json
import os
import statistics
import struct
import threading
import time

import psycopg

from outage import machine_share, machine_snapshot

MODES = ("barrier", "free")
KEYS = ("name", "pg")
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)


def table_shape(conn, table):
    """The table's column types (in order), its columns and primary key as `CREATE TABLE`
    has them, and its key column."""
    cols = conn.execute(
        "SELECT format_type(atttypid, NULL), format('%%I %%s', attname, format_type(atttypid, atttypmod))"
        " FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum", (table,)).fetchall()
    pk = conn.execute(
        "SELECT pg_get_constraintdef(c.oid), a.attname FROM pg_constraint c"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
        " WHERE c.conrelid = %s::regclass AND c.contype = 'p'", (table,)).fetchone()
    if pk is None:
        raise SystemExit(f"{table} has no primary key")
    return [t for t, _ in cols], ", ".join(c for _, c in cols) + ", " + pk[0], pk[1]


def read_rows(dsn, table, limit):
    """The table's rows in key order as binary COPY tuples, its column types, and the
    `CREATE TABLE` body of a table of its shape."""
    with psycopg.connect(dsn) as conn:
        types, create, key = table_shape(conn, table)
        q = psycopg.sql.SQL("COPY (SELECT * FROM {} ORDER BY {} {}) TO STDOUT (FORMAT binary)").format(
            psycopg.sql.Identifier(*table.split(".")), psycopg.sql.Identifier(key),
            psycopg.sql.SQL(f"LIMIT {int(limit)}" if limit else ""))
        data = bytearray()
        with conn.cursor().copy(q) as cp:
            for chunk in cp:
                data += chunk
    rows, at = [], len(HEADER)
    while True:
        (n,) = struct.unpack_from(">h", data, at)
        if n == -1:
            break
        start = at
        at += 2
        fields = []
        for _ in range(n):
            (size,) = struct.unpack_from(">i", data, at)
            at += 4
            fields.append(None if size == -1 else bytes(data[at:at + size]))
            at += max(size, 0)
        rows.append(fields)
        assert at > start
    return types, create, rows


def jsonb_order(v):
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: (len(k.encode()), k.encode()))
        return {k: jsonb_order(v[k]) for k in keys}
    if isinstance(v, list):
        return [jsonb_order(x) for x in v]
    return v


def encode(types, rows, keys):
    """The rows as binary COPY tuples, jsonb values re-written compact in the given key order."""
    out = []
    for fields in rows:
        t = bytearray(struct.pack(">h", len(fields)))
        for ty, f in zip(types, fields):
            if f is None:
                t += struct.pack(">i", -1)
                continue
            if ty == "jsonb":
                v = json.loads(f[1:])
                v = jsonb_order(v) if keys == "pg" else v
                f = b"\x01" + json.dumps(v, sort_keys=(keys == "name"),
                                         separators=(",", ":"), ensure_ascii=False).encode()
            t += struct.pack(">i", len(f)) + f
        out.append(bytes(t))
    return out


def run(dsn, table_sql, pieces, mode, gap):
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("DROP SCHEMA IF EXISTS bench_schedules CASCADE")
        admin.execute("CREATE SCHEMA bench_schedules")
        admin.execute(table_sql)
        # Every run from the same state: the WAL written before recycled (else the first
        # runs create the server's WAL segments and the later ones reuse them).
        try:
            admin.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(2)]

    def write(conn, piece):
        conn.execute("BEGIN")
        with conn.cursor().copy("COPY bench_schedules.orders FROM STDIN (FORMAT binary)") as cp:
            cp.write(piece)
        conn.execute("COMMIT")

    failed = []

    def write_or_note(conn, piece):
        try:
            write(conn, piece)
        except Exception as e:  # noqa: BLE001 (reported below, the run is void)
            failed.append(e)
            raise

    machine, t0 = machine_snapshot(), time.monotonic()
    if mode == "barrier":
        for g in range(0, len(pieces), 2):
            time.sleep(gap)
            ts = [threading.Thread(target=write_or_note, args=(c, p))
                  for c, p in zip(conns, pieces[g:g + 2])]
            [t.start() for t in ts]
            [t.join() for t in ts]
            if failed:
                break
    else:
        lock, todo = threading.Lock(), list(reversed(pieces))

        def worker(conn):
            while True:
                with lock:
                    if not todo or failed:
                        return
                    piece = todo.pop()
                write_or_note(conn, piece)

        ts = [threading.Thread(target=worker, args=(c,)) for c in conns]
        [t.start() for t in ts]
        [t.join() for t in ts]
    wall = time.monotonic() - t0
    end = machine_snapshot()
    busy = machine_share(machine, end)["busy"] / 100
    cpu = busy * sum(b - a for a, b in zip(machine, end)) / os.sysconf("SC_CLK_TCK")
    if failed:
        raise SystemExit(f"a write failed: {failed[0]}")
    for c in conns:
        c.close()
    return wall, cpu, busy


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="DSN of the server holding --source-table")
    ap.add_argument("--source-table", required=True, help="schema.table with the rows to write")
    ap.add_argument("--target", required=True, help="DSN of the server to write into")
    ap.add_argument("--rows", type=int, default=0, help="at most this many rows (all: 0)")
    ap.add_argument("--piece-rows", type=int, default=5000)
    ap.add_argument("--modes", default=",".join(MODES), help="of: " + ", ".join(MODES))
    ap.add_argument("--keys", default=",".join(KEYS), help="of: " + ", ".join(KEYS))
    ap.add_argument("--gap-ms", type=float, default=0.0)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    for flag, values, known in (("--modes", a.modes, MODES), ("--keys", a.keys, KEYS)):
        unknown = set(values.split(",")) - set(known)
        if unknown:
            ap.error(f"{flag}: {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    types, create, rows = read_rows(a.source, a.source_table, a.rows)
    table_sql = f"CREATE TABLE bench_schedules.orders ({create})"
    n = len(rows)
    results = {}
    encoded = {}
    for keys in a.keys.split(","):
        tuples = encode(types, rows, keys)
        encoded[keys] = [HEADER + b"".join(tuples[i:i + a.piece_rows]) + TRAILER
                         for i in range(0, n, a.piece_rows)]
    # One run to warm up, not counted; then interleaved: a noisy minute hits every variant.
    run(a.target, table_sql, encoded[a.keys.split(",")[0]], "free", 0)
    for _ in range(a.runs):
        for keys in a.keys.split(","):
            for mode in a.modes.split(","):
                wall, cpu, busy = run(a.target, table_sql, encoded[keys], mode, a.gap_ms / 1000)
                results.setdefault((mode, keys), []).append((n / wall, cpu * 1e6 / n, busy))
                print(f"  {mode} {keys}: {n / wall:,.0f} rows/s", flush=True)
    with psycopg.connect(a.target, autocommit=True) as admin:
        admin.execute("DROP SCHEMA IF EXISTS bench_schedules CASCADE")
    print(f"\n{n:,} rows in pieces of {a.piece_rows:,}, 2 connections, gap {a.gap_ms:g} ms, "
          f"medians of {a.runs}:\n")
    print("| schedule | jsonb keys | rows/s | machine CPU s / M rows | cores busy |")
    print("|---|---|---:|---:|---:|")
    for (mode, keys), xs in results.items():
        med = [statistics.median(x[i] for x in xs) for i in range(3)]
        print(f"| {mode} | {keys} | {med[0]:,.0f} | {med[1]:.2f} | {med[2]:.0%} |")


if __name__ == "__main__":
    main()
