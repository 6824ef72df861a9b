"""What the image archive's benchmarks (bench/archive.py, bench/archive_scale.py) share:
their command line's common part and how a report begins."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from backfill import compile_syncd


def parser(doc: str | None, parts: tuple[str, ...]) -> argparse.ArgumentParser:
    """A benchmark's command line: ``--part`` (all, or one of ``parts``), ``--tmp`` and ``--json``."""
    made = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    made.add_argument("--part", choices=("all", *parts), default="all")
    made.add_argument("--tmp", default=None, help="where the databases and archives go (deleted)")
    made.add_argument("--json", action="store_true", help="Print the results as JSON too.")
    return made


def start() -> dict[str, Any]:
    """Before a benchmark measures: syncd byte-compiled; the report's date and machine."""
    compile_syncd()
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
    }
