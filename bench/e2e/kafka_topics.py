#!/usr/bin/env python3
"""Deletes the Kafka topics a benchmark run made.

    kafka_topics.py BROKERS delete PREFIX   # every topic whose name starts with PREFIX
"""

import sys

from confluent_kafka.admin import AdminClient


def main():
    brokers, action, prefix = sys.argv[1:4]
    if action != "delete" or not prefix:
        sys.exit(__doc__)
    admin = AdminClient({"bootstrap.servers": brokers})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    for topic, f in (admin.delete_topics(topics).items() if topics else []):
        f.result()
        print(f"deleted {topic}")


if __name__ == "__main__":
    main()
