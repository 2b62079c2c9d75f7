#!/usr/bin/env python3
"""Scenario 5 of scripts/bench.sh: dlt, the peer, on the same job.

dlt's `rest_api` source reads the mock API with its cursor paginator, and the pipeline
merges the records on `id` into PostgreSQL (`write_disposition: merge`, dlt's default
delete-insert strategy through a staging dataset, its default `insert_values` loader).
`max_table_nesting=0` keeps the nested customer, items and tags as JSON (jsonb) columns of
one table, as Sluice does, instead of dlt's default of splitting them into child tables.

    dlt_peer.py API_BASE POSTGRES_URL DATASET PIPELINES_DIR

Writes DATASET.orders. Telemetry is off (the environment of scripts/bench.sh).
"""

import sys

import dlt
from dlt.sources.rest_api import rest_api_source


def main():
    api, pg_url, dataset, pipelines_dir = sys.argv[1:5]
    source = rest_api_source(
        {
            "client": {
                "base_url": api,
                "paginator": {
                    "type": "cursor",
                    "cursor_path": "meta.next_cursor",
                    "cursor_param": "cursor",
                },
            },
            "resource_defaults": {
                "primary_key": "id",
                "write_disposition": "merge",
            },
            "resources": [
                {
                    "name": "orders",
                    "endpoint": {
                        "path": "cursor/items",
                        "params": {"limit": 1000},
                        "data_selector": "data.items",
                    },
                },
            ],
        },
        max_table_nesting=0,
    )
    pipeline = dlt.pipeline(
        pipeline_name="sluice_bench",
        pipelines_dir=pipelines_dir,
        destination=dlt.destinations.postgres(credentials=pg_url),
        dataset_name=dataset,
    )
    info = pipeline.run(source)
    info.raise_on_failed_jobs()
    print(pipeline.last_trace.last_normalize_info)


if __name__ == "__main__":
    main()
