"""A dlt `rest_api` pipeline doing syncd's job, for bench/backfill.py's comparison.

    python bench/dlt_pipeline.py API_URL API_KEY sqlite:///path.db PAGE_SIZE

Runs in a venv of its own (dlt is not a dependency of syncd):
    python3 -m venv /tmp/dlt && /tmp/dlt/bin/pip install dlt sqlalchemy
then `bench/backfill.py --dlt-python /tmp/dlt/bin/python`. It pages the same
fake API by skip/limit and merges the artworks by id into SQLite (dlt's
sqlalchemy destination), normalising nested parameters and results into child
tables as dlt does by default: the closest a general tool comes to syncd.
"""

from __future__ import annotations

import sys
import tempfile

import dlt
from dlt.sources.rest_api import rest_api_source


def main() -> None:
    api_url, api_key, database_url, page_size = sys.argv[1:5]
    source = rest_api_source(
        {
            "client": {"base_url": api_url, "auth": {"type": "bearer", "token": api_key}},
            "resources": [
                {
                    "name": "artworks",
                    "primary_key": "id",
                    "write_disposition": "merge",
                    "endpoint": {
                        "path": "v1/artworks",
                        "paginator": {
                            "type": "offset",
                            "limit": int(page_size),
                            "offset_param": "skip",
                            "limit_param": "limit",
                            "total_path": None,
                            "stop_after_empty_page": True,
                        },
                    },
                }
            ],
        }
    )
    with tempfile.TemporaryDirectory() as pipelines_dir:
        pipeline = dlt.pipeline(
            pipeline_name="syncd_bench",
            pipelines_dir=pipelines_dir,
            destination=dlt.destinations.sqlalchemy(database_url),
            dataset_name="main",
            progress="log" if "--progress" in sys.argv else None,
        )
        pipeline.run(source)


if __name__ == "__main__":
    main()
