"""``syncd status``: what the database says about the sync, as data and as text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from syncd import db, locks, store
from syncd.errors import one_line
from syncd.records import TERMINAL_STATUSES
from syncd.state import ListOrder
from syncd.wording import duration, plural

runs = store.runs_table
artworks = store.artworks


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if moment else None


def _run_dict(row: Any, now: datetime) -> dict[str, Any]:
    finished = row.finished_at
    return {
        "id": row.id,
        "mode": row.mode,
        "outcome": row.outcome,
        "started_at": _iso(row.started_at),
        "finished_at": _iso(finished),
        "age_seconds": round((now - finished).total_seconds(), 1) if finished else None,
        "pages": row.pages,
        "requests": row.requests,
        "inserted": row.inserted,
        "updated": row.updated,
        "unchanged": row.unchanged,
        "rejected": row.rejected,
        "marked_deleted": row.marked_deleted,
        "error": row.error,
    }


def collect(
    engine: Engine, now: datetime | None = None, *, archive_on: bool = False, archive_store: str | None = None
) -> dict[str, Any]:
    """Everything `syncd status` shows, as JSON-ready data.

    ``archive_on``: the image archive is configured (or asked about): images
    no archive run has seen yet count in its lag. ``archive_store``: where
    this configuration keeps it (its bucket URL or folder; no credential).
    """
    now = now or datetime.now(UTC)
    version = db.schema_version(engine)
    report: dict[str, Any] = {
        "database": db.safe_url(str(engine.url)),
        "schema": {"current": version.current, "latest": version.head, "up_to_date": version.up_to_date},
        "now": _iso(now),
    }
    if version.current is None:
        report.update(
            running=None,
            last_success=None,
            last_failure=None,
            last_interruption=None,
            last_runs=[],
            streams=[],
            tables={},
        )
        return report
    with engine.connect() as conn:

        def last(*where: Any) -> dict[str, Any] | None:
            row = conn.execute(select(runs).where(*where).order_by(runs.c.id.desc()).limit(1)).first()
            return _run_dict(row, now) if row else None

        running = conn.execute(
            select(runs).where(runs.c.outcome == "running").order_by(runs.c.id.desc()).limit(1)
        ).first()
        report["running"] = None if running is None else _run_dict(running, now)
        report["last_success"] = last(runs.c.outcome == "success")
        # A stop request (Ctrl-C, SIGTERM, a restart) is not a failure: said apart.
        report["last_failure"] = last(runs.c.outcome.not_in(["success", "running", "interrupted"]))
        report["last_interruption"] = last(runs.c.outcome == "interrupted")
        recent = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(5)).all()
        report["last_runs"] = [_run_dict(row, now) for row in recent]
        streams = []
        for row in conn.execute(select(store.state_table)).mappings():
            stream = row["stream"]
            last_incremental = last(
                runs.c.stream == stream, runs.c.mode == "incremental", runs.c.outcome == "success"
            )
            order = ListOrder(row["list_order"])
            rate_until = row["rate_limited_until"]
            streams.append(
                {
                    "stream": stream,
                    "list_order": str(order),
                    "strategy": "incremental"
                    if order.is_sorted
                    else "full scan every run (order unknown or unordered)",
                    "phase": row["phase"],
                    "cursor": {"skip": row["cursor_skip"], "id": row["cursor_id"]},
                    "head": {"id": row["head_id"], "created_at": _iso(row["head_created_at"])},
                    "tail": {"id": row["tail_id"], "created_at": _iso(row["tail_created_at"])},
                    "listed_total": row["listed_total"],
                    "backfill_completed_at": _iso(row["backfill_completed_at"]),
                    "last_full_sync_at": _iso(row["last_full_sync_at"]),
                    "last_incremental": last_incremental,
                    "rate_limited_until": _iso(rate_until) if rate_until and rate_until > now else None,
                }
            )
        report["streams"] = streams
        report["awaiting_refresh"] = conn.execute(
            select(func.count())
            .select_from(artworks)
            .where(
                artworks.c.status.not_in(sorted(TERMINAL_STATUSES)), artworks.c.remote_deleted_at.is_(None)
            )
        ).scalar_one()
        report["marked_deleted"] = conn.execute(
            select(func.count()).select_from(artworks).where(artworks.c.remote_deleted_at.is_not(None))
        ).scalar_one()
        report["tables"] = store.table_counts(conn)
        report["archive"] = (
            _archive(conn, now, archive_on, archive_store) if "archived_files" in report["tables"] else None
        )
    if report["running"] is not None:
        # Counts as of its last commit; "running" without a lock holder: the
        # process died, and the next sync will record it as crashed.
        report["running"]["alive"] = locks.lock_held(engine)
    return report


def _archive(conn: Any, now: datetime, archive_on: bool, configured: str | None) -> dict[str, Any] | None:
    """The archive's part: when it is configured (or asked about), or was ever
    used on this database; None otherwise (a database synced without it)."""
    from syncd.archive import discover, rows
    from syncd.archive.plan import RETENTION, lag_seconds

    if not archive_on and not discover.load(conn).images_since and not rows.archived_count(conn):
        return None
    summary = rows.summary(conn, now)
    oldest = summary.oldest_waiting_expiry
    return {
        "files": summary.files,
        "bytes_archived": summary.bytes_archived,
        "lag_seconds": round(lag_seconds(oldest, now), 1),
        "window_seconds": RETENTION.total_seconds(),
        "oldest_waiting_created_at": _iso(oldest - RETENTION) if oldest else None,
        "overdue": summary.overdue,
        "given_up": summary.given_up,
        "on": summary.archive_on,
        "not_yet_recorded_before": _iso(summary.walk_to),
        # Where the files are: the configured store, and the archived images
        # each store holds ("" a folder's, archived before revision 0007).
        "store": configured,
        "stores": rows.archived_by_store(conn) if "store" in _columns(conn) else {},
    }


def _columns(conn: Any) -> set[str]:
    from sqlalchemy import inspect

    return {column["name"] for column in inspect(conn).get_columns("archived_files")}


def render(report: dict[str, Any]) -> str:
    lines = [f"database      {report['database']}"]
    schema = report["schema"]
    lines.append(
        f"schema        {schema['current'] or 'empty'}"
        + ("" if schema["up_to_date"] else f" (latest {schema['latest']}: run `syncd db upgrade`)")
    )
    ok = report.get("last_success")
    lines.append(
        f"last success  {ok['finished_at']} ({duration(ok['age_seconds'])} ago), run {ok['id']} {ok['mode']}"
        if ok
        else "last success  never"
    )
    run = report.get("running")
    if run:
        started = f"run {run['id']} {run['mode']} started {run['started_at']}"
        done = (
            f"{plural(run['pages'], 'page')}, {plural(run['requests'], 'request')}, "
            f"+{run['inserted']} ~{run['updated']}"
        )
        if run["alive"]:
            lines.append(f"running now   {started}: {done} so far")
        elif run["alive"] is None:
            lines.append(
                f"running?      {started}: {done} so far (whether its process lives cannot be told: "
                "the lock file is not readable by this user)"
            )
        else:
            lines.append(
                f"abandoned     {started}: its process ended without recording an outcome "
                "(the next sync records it as crashed)"
            )
    bad = report.get("last_failure")
    if bad:
        lines.append(
            f"last failure  {bad['finished_at']} run {bad['id']} {bad['mode']} {bad['outcome']}: "
            + one_line(bad["error"] or "")
        )
    stopped = report.get("last_interruption")
    if stopped and (not ok or stopped["id"] > ok["id"]):  # older than the last success: history
        lines.append(
            f"interrupted   {stopped['finished_at']} run {stopped['id']} {stopped['mode']}: stopped on request; "
            "its committed pages stay and the next run goes on from there"
        )
    for stream in report.get("streams", []):
        lines.append("")
        lines.append(f"stream {stream['stream']}")
        lines.append(f"  list order        {stream['list_order']} -> {stream['strategy']}")
        lines.append(
            f"  phase             {stream['phase']}"
            + (f" (cursor at skip {stream['cursor']['skip']})" if stream["phase"] != "idle" else "")
        )
        lines.append(f"  head / tail       {stream['head']['id'] or '-'} / {stream['tail']['id'] or '-'}")
        lines.append(
            f"  listed total      {stream['listed_total'] if stream['listed_total'] is not None else '-'}"
        )
        lines.append(f"  backfill done     {stream['backfill_completed_at'] or 'not yet'}")
        lines.append(f"  last full sync    {stream['last_full_sync_at'] or 'never'}")
        inc = stream["last_incremental"]
        lines.append(
            f"  last incremental  {inc['finished_at']}: {plural(inc['requests'], 'request')}, {inc['inserted']} new, {inc['updated']} updated"
            if inc
            else "  last incremental  none yet"
        )
        if stream["rate_limited_until"]:
            lines.append(f"  rate limited until {stream['rate_limited_until']}")
    if "awaiting_refresh" in report:
        lines.append("")
        lines.append(
            f"awaiting refresh  {plural(report['awaiting_refresh'], 'artwork')} (status not terminal)"
        )
        lines.append(
            f"marked deleted    {plural(report['marked_deleted'], 'artwork')} (no longer listed by the API)"
        )
    archive = report.get("archive")
    if archive:
        files = archive["files"]
        lines.append("")
        lines.append(
            "image archive     "
            + ", ".join(f"{files[name]:,} {name}" for name in ("archived", "pending", "gone", "failed"))
            + f" ({archive['bytes_archived'] / 1e6:,.1f} MB)"
        )
        held = archive.get("stores") or {}
        if archive.get("store") or held:
            told = [
                f"{count:,} in {name or 'a folder (before revision 0007)'}"
                for name, count in sorted(held.items())
            ]
            lines.append(
                "archive store     "
                + (f"{archive['store']} (configured)" if archive.get("store") else "none configured")
                + (f"; archived: {', '.join(told)}" if told else "")
            )
        if archive["not_yet_recorded_before"]:
            lines.append(
                "archive walk      "
                + (
                    f"the images of artworks stored before {archive['not_yet_recorded_before']} are not "
                    "recorded yet (the next archive run walks them, newest first)"
                    if archive["on"]
                    else "the archive has not run on this database yet: no image is recorded"
                )
            )
        window = duration(archive["window_seconds"])
        lag = archive["lag_seconds"]
        lines.append(
            f"archive lag       {duration(lag)} (the API deletes images {window} after creation)"
            + (
                f"; {archive['overdue']:,} waiting images are older than that (tried after the live ones)"
                if archive["overdue"]
                else ""
            )
        )
        if archive["given_up"]:
            lines.append(
                f"archive given up  {archive['given_up']:,} failed images are no longer tried "
                "(`syncd archive --retry-failed` tries them again)"
            )
    if report.get("tables"):
        lines.append("")
        lines.append("rows per table")
        for name, count in report["tables"].items():
            lines.append(f"  {name:<22}{count:>10,}")
    if report.get("last_runs"):
        lines.append("")
        lines.append("recent runs")
        for run in report["last_runs"]:
            lines.append(
                f"  #{run['id']:<5} {run['mode']:<11} {run['outcome']:<12} {run['started_at']}  "
                f"{run['requests']} req, +{run['inserted']} ~{run['updated']} ={run['unchanged']} !{run['rejected']}"
            )
    return "\n".join(lines)
