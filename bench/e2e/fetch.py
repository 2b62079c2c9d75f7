#!/usr/bin/env python3
"""Reads every record of the mock API once (cursor pagination) and writes:

- a CSV file with the columns of the benchmark table (see table.sql), nested values as
  JSON text: what the ceiling scenario loads with a plain COPY;
- a JSON file with the source's row count and checksum, the reference every scenario's
  table is checked against.

    fetch.py BASE_URL OUT.csv OUT.json [PAGE_SIZE]

The checksum is md5 over the ids in order, each with its `updated_at` as Unix seconds:
"1:1704067260,2:1704067321,...", the same text checksum.sql builds from a table.
"""

import csv
import hashlib
import json
import sys
from datetime import datetime

import requests

COLUMNS = [
    "id", "updated_at", "created_at", "status", "amount", "currency",
    "customer", "items", "tags", "notes",
]
NESTED = {"customer", "items", "tags"}


def epoch(ts):
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())


def main():
    base, out_csv, out_json = sys.argv[1:4]
    page_size = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    session = requests.Session()
    cursor = None
    keys = []  # (id, epoch of updated_at)
    with open(out_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        while True:
            params = {"limit": page_size}
            if cursor:
                params["cursor"] = cursor
            r = session.get(f"{base}/cursor/items", params=params, timeout=60)
            r.raise_for_status()
            body = r.json()
            for rec in body["data"]["items"]:
                row = []
                for c in COLUMNS:
                    v = rec.get(c)
                    if c in NESTED:
                        v = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
                    elif v is None:
                        v = None
                    elif isinstance(v, float):
                        v = repr(v)
                    row.append(v)
                w.writerow(row)
                keys.append((rec["id"], epoch(rec["updated_at"])))
            cursor = body["meta"].get("next_cursor")
            if not cursor:
                break
    keys.sort()
    digest = hashlib.md5(",".join(f"{i}:{t}" for i, t in keys).encode()).hexdigest()
    with open(out_json, "w") as f:
        json.dump({"rows": len(keys), "checksum": digest}, f)
    print(f"fetched {len(keys)} records, checksum {digest}")


if __name__ == "__main__":
    main()
