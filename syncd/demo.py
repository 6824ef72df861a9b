"""``syncd demo``: the fake API (and its image host) in-process, synced into
SQLite, the images archived, and an analyst's query on the result.

Loaded only when it runs (the ``syncd`` group finds it lazily).
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import click

from syncd.clitools import handle_errors, summary_screen
from syncd.config import load_settings

DEMO_QUERY = """
SELECT artwork_type, status, COUNT(*) AS artworks
FROM artworks
GROUP BY artwork_type, status
ORDER BY artworks DESC
LIMIT 8
""".strip()


ARCHIVE_QUERY = """
SELECT role, status, COUNT(*) AS images, COALESCE(SUM(size_bytes), 0) AS bytes
FROM archived_files
GROUP BY role, status
ORDER BY role, status
""".strip()
DEMO_IMAGE_BYTES = 4096  # per image: the demo's archive stays small (~40 MB for 5,000 artworks)


def _last_image_port(database_url: str) -> int | None:
    """The image host's port in the URLs a demo stored in this database before (None: no demo yet)."""
    from urllib.parse import urlsplit

    from sqlalchemy import text

    from syncd import db

    path = db.sqlite_path(database_url)
    if path is None or not path.exists():
        return None
    try:
        with db.reading(database_url) as engine, engine.connect() as conn:
            url = conn.execute(text("SELECT url FROM artwork_results LIMIT 1")).scalar()
    except Exception:  # not a demo's database (or not syncd's): a port of its own
        return None
    try:
        return urlsplit(url).port if isinstance(url, str) else None
    except ValueError:
        return None


@click.command("demo")
@click.option("--count", default=5000, show_default=True, type=int, help="Artworks in the fake API.")
@click.option(
    "--database-url",
    default="sqlite:///syncd-demo.db",
    show_default=True,
    help="The demo's database (an SQLAlchemy URL); a second demo into it syncs incrementally.",
)
@click.option(
    "--archive-dir",
    default="syncd-demo-images",
    show_default=True,
    help="Where the demo archives the artworks' images ('' to skip the archive).",
)
@handle_errors
def demo_command(count: int, database_url: str, archive_dir: str) -> None:
    """Start the fake API (and its image host) in-process, sync it into SQLite,
    archive the images, and query the result.

    \b
    Example:
      syncd demo && sqlite3 syncd-demo.db 'SELECT COUNT(*) FROM artworks'
    """
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    from syncd.app import archive, open_engine, run_once
    from syncd.fakeapi.data import Dataset
    from syncd.fakeapi.images import ImageFaults, ImageServer
    from syncd.fakeapi.server import FakeApi, FakeServer

    # A week of artworks up to the start of today: the API keeps 8 days, and
    # the same data all day, so that a second demo's sync is incremental.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # The images' URLs name their host's port: the port the last demo into
    # this database used, when it is free, so that a second demo's artworks
    # are the same records (and its sync reports no change).
    images = None
    port = _last_image_port(database_url)
    if port is not None:
        with suppress(OSError):
            images = ImageServer(port=port, faults=ImageFaults(size=DEMO_IMAGE_BYTES))
    if images is None:
        images = ImageServer(faults=ImageFaults(size=DEMO_IMAGE_BYTES))
    dataset = Dataset(count, seed=42, start=today - timedelta(days=7), end=today, image_origin=images.url)
    server = FakeServer(FakeApi(dataset)).start()
    images.attach(server.api).start()
    try:
        env = {
            "SYNCD_API_URL": server.url,
            "SYNCD_API_KEY": "demo-key",
            "SYNCD_DATABASE_URL": database_url,
            "SYNCD_MAX_REQUESTS_PER_SECOND": "1000",
            "SYNCD_ARCHIVE_DIR": archive_dir,
            "SYNCD_ARCHIVE_MAX_REQUESTS_PER_SECOND": "1000",
            "SYNCD_ARCHIVE_MIN_FREE_BYTES": "0",
        }
        settings = load_settings(env=env, system_config_path=Path("/nonexistent"))
        from syncd.log import setup_logging

        setup_logging("warning", "text")
        click.echo(f"fake API with {count} artworks on {server.url}; syncing into {database_url}")
        for summary in run_once(settings).summaries:
            click.echo(summary_screen(summary))
        if archive_dir:
            click.echo(f"\narchiving their images from {images.url} into {archive_dir}/")
            click.echo(archive(settings).result.line())
        with open_engine(settings) as engine, engine.connect() as conn:
            rows = conn.execute(text(DEMO_QUERY)).all()
            archived = conn.execute(text(ARCHIVE_QUERY)).all() if archive_dir else []
    finally:
        server.stop()
        images.stop()
    click.echo(
        "\nAn analyst's query:\n\n" + "\n".join("    " + line for line in DEMO_QUERY.splitlines()) + "\n"
    )
    click.echo(f"    {'artwork_type':<20}{'status':<10}{'artworks':>9}")
    for artwork_type, status, artworks in rows:
        click.echo(f"    {artwork_type:<20}{status:<10}{artworks:>9}")
    if archive_dir:
        click.echo(
            "\nThe image archive:\n\n"
            + "\n".join("    " + line for line in ARCHIVE_QUERY.splitlines())
            + "\n"
        )
        click.echo(f"    {'role':<10}{'status':<10}{'images':>8}{'bytes':>14}")
        for role, status, count_, size in archived:
            click.echo(f"    {role:<10}{status:<10}{count_:>8}{size:>14,}")
    click.echo(
        "\nRun it again: the second sync is incremental and costs one request; no image is fetched twice."
    )
