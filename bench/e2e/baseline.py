#!/usr/bin/env python3
"""Scenario 6 of scripts/bench.sh: the job written by hand, as a user would without a tool.

Reads every page of the API (cursor pagination, retrying 429s after Retry-After and 5xx
with a backoff), sends each record to Kafka (one message per record, keyed by id), and in
another thread consumes them in chunks of up to 5,000, loads each chunk with COPY into a
temporary table and upserts it into the target in one transaction, then commits the
consumer's offsets.

    baseline.py API_BASE POSTGRES_URL TABLE TOPIC [KAFKA_BROKERS]

The target table must exist (bench/e2e/table.sql). The topic is created with one partition.
"""

import json
import sys
import threading
import time

import psycopg
import requests
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

COLUMNS = ["id", "updated_at", "created_at", "status", "amount", "currency",
           "customer", "items", "tags", "notes"]
JSON_COLUMNS = {"customer", "items", "tags"}
END = b"__end__"


def get_page(session, url, params):
    for attempt in range(10):
        try:
            r = session.get(url, params=params, timeout=30)
        except requests.ConnectionError:
            time.sleep(min(2 ** attempt * 0.2, 10))
            continue
        if r.status_code == 429:
            time.sleep(float(r.headers.get("Retry-After", "1")))
            continue
        if r.status_code >= 500:
            time.sleep(min(2 ** attempt * 0.2, 10))
            continue
        r.raise_for_status()
        return r.json()
    raise RuntimeError(f"giving up on {url} {params}")


def produce(api, topic, brokers, errors):
    try:
        producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True,
                             "linger.ms": 20, "compression.type": "zstd"})
        session = requests.Session()
        cursor = None
        while True:
            params = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = get_page(session, f"{api}/cursor/items", params)
            for record in page["data"]["items"]:
                while True:
                    try:
                        producer.produce(topic, key=str(record["id"]), value=json.dumps(record))
                        break
                    except BufferError:
                        producer.poll(0.1)
            producer.poll(0)
            cursor = page["meta"].get("next_cursor")
            if not cursor:
                break
        producer.produce(topic, value=END)
        if producer.flush(60) != 0:
            raise RuntimeError("messages left unsent")
    except Exception as e:  # noqa: BLE001 - reported by the main thread
        errors.append(e)


def load(pg_url, table, topic, brokers, errors):
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"{topic}-loader",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    cols = ", ".join(COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "id")
    loaded = 0
    with psycopg.connect(pg_url) as conn:
        conn.execute(f"CREATE TEMP TABLE stage (LIKE {table}) ON COMMIT DELETE ROWS")
        conn.commit()
        done = False
        while not done and not errors:
            msgs = consumer.consume(5000, timeout=1.0)
            rows = {}
            for m in msgs:
                if m.error():
                    raise KafkaException(m.error())
                if m.value() == END:
                    done = True
                    continue
                r = json.loads(m.value())
                rows[r["id"]] = [json.dumps(r.get(c)) if c in JSON_COLUMNS else r.get(c)
                                 for c in COLUMNS]
            if rows:
                with conn.cursor() as cur:
                    with cur.copy(f"COPY stage ({cols}) FROM STDIN") as copy:
                        for row in rows.values():
                            copy.write_row(row)
                    cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM stage "
                                f"ON CONFLICT (id) DO UPDATE SET {updates}")
                conn.commit()
                loaded += len(rows)
            if msgs:
                consumer.commit(asynchronous=False)
    consumer.close()
    return loaded


def main():
    api, pg_url, table, topic = sys.argv[1:5]
    brokers = sys.argv[5] if len(sys.argv) > 5 else "127.0.0.1:9092"
    admin = AdminClient({"bootstrap.servers": brokers})
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result()
    errors = []
    t = threading.Thread(target=produce, args=(api, topic, brokers, errors))
    t.start()
    loaded = load(pg_url, table, topic, brokers, errors)
    t.join()
    if errors:
        raise errors[0]
    print(f"loaded {loaded} records")


if __name__ == "__main__":
    main()
