"""A hostile API: no record, header or message can stop the sync, leak the key or wedge syncd.

Each attack here once stopped every later sync, printed the key, or waited
forever. Against the fake API over a socket, with the real CLI, on both
databases where a database is involved: `run-once` exits 0 (or fails for a
reason an operator can read, then completes once the API heals), every
well-formed record is stored exactly, the poisoned one is in rejected_records.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text

from syncd import db, locks, store
from syncd.app import SyncOptions, run_once
from syncd.errors import SyncdError
from syncd.fakeapi.data import POISONS, VALID_POISONS
from syncd.fakeapi.server import FakeServer, Faults, encoded_forms
from tests.conftest import backdate_checks, make_settings, run_cli, run_syncd_measured, syncd_env

KEY = "sk-live-7f3a9c2e1b8d4f60a5e2"
REASONS = {
    "surrogate": "not parseable JSON",
    "nan": "not parseable JSON",
    "huge_number": "not parseable JSON",
    "deep": "nested deeper than 32 levels",
    "nul": "U+0000",
    "long_status": "status: String should have at most 64 characters",
    "far_date": "createdAt: beyond the dates a database can hold",
    "id_newline": "id: not a UUID",
    "long_id": "id: not a UUID",
    "key_echo": "contains the API key",
    "key_encoded": "contains the API key",
}


def hostile_env(server: FakeServer, database_url: str, **extra: str) -> dict[str, str]:
    env = syncd_env(server.url, database_url, **{"page_size": "100", **extra})
    env["SYNCD_API_KEY"] = KEY
    return env


def raw_text(engine: Engine, artwork_id: str) -> str:
    """``raw`` as the database holds it (the text, not what a JSON reader makes of it)."""
    column = "raw::text" if engine.dialect.name == "postgresql" else "raw"
    with engine.connect() as conn:
        return str(
            conn.execute(text(f"SELECT {column} FROM artworks WHERE id = :id"), {"id": artwork_id}).scalar()
        )


def rows(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {row.id: row for row in conn.execute(select(store.artworks))}


def rejected(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(store.rejected_table)))


def assert_clean(result: Any) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_a_poisoned_single_artwork_body_is_quarantined_and_the_refresh_goes_on(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(200, api_key=KEY, malformed_fraction=0, unknown_fraction=0, pending_fraction=0.2)
    env = hostile_env(server, db_url)
    assert_clean(run_cli(["run-once"], env, cwd=tmp_path))
    pending = [a for a in server.api.dataset.items if a.pending]
    server.api.dataset.finish_pending()
    # Now GET /v1/artworks/{id} (and the list) answers these with hostile bodies.
    for artwork, body in zip(pending, (b"[]", b'"x"', b'{"id": NaN}', b"{}"), strict=False):
        artwork._json = body
    for _ in range(2):  # every later run too
        backdate_checks(engine)
        assert_clean(run_cli(["run-once"], env, cwd=tmp_path))
    assert server.api.stats.get_requests > 0
    statuses = {row.id: row.status for row in rows(engine).values()}
    assert len(pending) > 4 and all(statuses[a.id] == "done" for a in pending[4:])  # the refresh went on
    assert all(statuses[a.id] == "processing" for a in pending[:4])


@pytest.mark.parametrize("kind", POISONS)
def test_a_poisoned_record_is_quarantined_and_every_later_run_succeeds(
    kind: str, db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(300, api_key=KEY, malformed_fraction=0, unknown_fraction=0)
    poisoned = server.api.dataset.poison([kind], KEY)[kind]
    env = hostile_env(server, db_url)
    assert_clean(run_cli(["run-once"], env, cwd=tmp_path))
    assert_clean(run_cli(["run-once", "--full"], env, cwd=tmp_path))  # reads the poisoned page again
    stored = rows(engine)
    # Ids are stored in lower case: an upper-case copy is the same artwork.
    well_formed = {a.id.lower(): a.value for a in server.api.dataset.valid() if a.id}
    assert set(stored) == set(well_formed)
    for artwork_id, value in well_formed.items():
        assert stored[artwork_id].raw == value  # stored exactly (integers of any size too)
    quarantined = rejected(engine)
    if kind in VALID_POISONS:  # valid, if hostile: stored exactly
        assert quarantined == []
        assert poisoned.id is not None and stored[poisoned.id.lower()].raw is not None
        if kind == "big_integer":  # every digit, in the database's own text
            assert '"seed":1180591620717411303425' in raw_text(engine, poisoned.id.lower()).replace(" ", "")
        if kind == "id_upper":
            assert stored[poisoned.id.lower()].raw["id"] == poisoned.id  # raw keeps what was sent
            server.api.dataset.heal()  # served in lower case again: the same row, not a second one
            assert_clean(run_cli(["run-once", "--full"], env, cwd=tmp_path))
            assert set(rows(engine)) == set(well_formed)
        if kind != "control":
            return
        params = store.PARAMETER_TABLES["txt2img_parameters"]
        with engine.connect() as conn:
            prompt = conn.execute(select(params.c.prompt).where(params.c.artwork_id == poisoned.id)).scalar()
        if poisoned.value["artworkType"] == "txt2img":
            assert prompt == poisoned.value["parameters"]["prompt"]
        return
    assert len(quarantined) == 1, [(r.reason, r.raw[:80]) for r in quarantined]
    assert REASONS[kind] in quarantined[0].reason
    assert quarantined[0].times_seen == 2  # seen by both runs, stored once
    for form in (KEY, *encoded_forms(KEY)):  # the key in no form, in the payload kept
        assert form not in quarantined[0].raw


def test_the_key_echoed_by_the_api_reaches_no_output_log_or_database_in_any_form(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    """The API's messages echo the key as is, percent-encoded (both cases of
    hex), base64 and base64url (with and without "Bearer ", padded or not) and
    hex; records carry it as is, base64'ed and as hex. No form of it reaches
    stdout, the text or JSON log, status (--json), sync_runs or any table."""
    faults = Faults(echo_key=True, error_5xx=0.3, rate_limit=50)
    server = fake_api(400, faults=faults, api_key=KEY, malformed_fraction=0.02)
    server.api.dataset.poison(["key_echo", "key_encoded"], KEY)
    forms = [KEY, *encoded_forms(KEY)]
    outputs: list[str] = []
    for log_format in ("text", "json"):
        env = hostile_env(server, db_url, log_level="debug", log_format=log_format, max_attempts="20")
        for args in (["run-once", "--full"], ["status", "--json"]):
            result = run_cli(args, env, cwd=tmp_path)
            assert result.returncode == 0, result.stderr[-2000:]
            outputs += [result.stdout, result.stderr]
    server.api.faults.error_5xx = 0
    server.api.faults.auth_status = 401  # "invalid key" echoing the key it was sent
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 4
    outputs += [result.stdout, result.stderr, run_cli(["status", "--json"], env, cwd=tmp_path).stdout]
    server.api.faults.auth_status = 0
    server.api.faults.error_5xx = 1.0  # a run that runs out of retries, its error stored
    result = run_cli(["run-once", "--full"], {**env, "SYNCD_MAX_ATTEMPTS": "2"}, cwd=tmp_path)
    assert result.returncode == 5
    outputs += [result.stdout, result.stderr, run_cli(["status"], env, cwd=tmp_path).stdout]
    assert any("[REDACTED]" in out for out in outputs)
    with engine.connect() as conn:
        error = conn.execute(text("SELECT error FROM sync_runs WHERE outcome = 'auth_failed'")).scalar()
    assert error is not None and "[REDACTED]" in error  # the 401's words are kept, the key is not
    for out in outputs:
        for form in forms:
            assert form not in out, form
    with engine.connect() as conn:  # every value of every table, as text
        for table in store.DATA_TABLES:
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                for form in forms:
                    assert form not in str(tuple(row)), (table, form)
    if engine.dialect.name == "sqlite":  # and every byte of the file, WAL included
        database = Path(str(engine.url.database))
        for path in database.parent.glob(database.name + "*"):
            content = path.read_bytes()
            for form in forms:
                assert form.encode() not in content, (path, form)


@pytest.mark.parametrize(
    ("faults", "why"),
    [
        ({"content_encoding": "gzip"}, "cannot be decoded"),
        ({"dribble": 0.05}, "an answer must be complete within 2s"),
    ],
)
def test_broken_transport_is_retried_then_fails_in_bounded_time_and_heals(
    db_url: str,
    engine: Engine,
    fake_api: Callable[..., FakeServer],
    tmp_path: Path,
    faults: dict[str, Any],
    why: str,
) -> None:
    server = fake_api(250, faults=Faults(**faults), api_key=KEY, malformed_fraction=0)
    env = hostile_env(server, db_url, max_attempts="2", connect_timeout="1", read_timeout="1")
    started = time.monotonic()
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 5, result.stderr[-2000:]
    assert time.monotonic() - started < 30
    assert why in result.stderr and "Traceback" not in result.stderr
    server.api.faults.content_encoding, server.api.faults.dribble = "", 0.0
    assert_clean(run_cli(["run-once"], env, cwd=tmp_path))
    assert set(rows(engine)) == {a.id for a in server.api.dataset.valid()}


@pytest.mark.parametrize("compressed", ["bomb:gzip", "bomb:gzip, gzip", "gzip, gzip", "br"])
def test_a_body_encoded_as_syncd_did_not_ask_cannot_take_its_memory(
    compressed: str, sqlite_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    """gzip of gzip of 1 GiB of spaces (1,828 bytes) took syncd to 2,118 MiB,
    one layer of it to 197 MiB. syncd asks for identity, refuses stacked and
    unknown encodings unread, and inflates one layer within the page cap.

    On SQLite only: the bodies are refused before anything reaches the
    database, and a process of its own (for its peak memory) costs ~2 s."""
    server = fake_api(300, faults=Faults(compressed=compressed), api_key=KEY, malformed_fraction=0)
    env = hostile_env(server, sqlite_url, max_attempts="2")
    result, peak = run_syncd_measured(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 5, result.stderr[-2000:]
    why = "a body over" if compressed == "bomb:gzip" else "syncd asks for identity"
    assert why in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert peak < 200 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"
    server.api.faults.compressed = ""
    assert_clean(run_cli(["run-once"], env, cwd=tmp_path))
    engine = db.create_db_engine(sqlite_url)
    try:
        assert set(rows(engine)) == {a.id for a in server.api.dataset.valid()}
    finally:
        engine.dispose()


@pytest.mark.parametrize("compressed", ["gzip", "deflate"])
def test_one_honest_layer_of_compression_is_read(
    compressed: str, db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(300, faults=Faults(compressed=compressed), api_key=KEY, malformed_fraction=0)
    assert_clean(run_cli(["run-once"], hostile_env(server, db_url), cwd=tmp_path))
    assert set(rows(engine)) == {a.id for a in server.api.dataset.valid()}


def test_an_answer_with_another_artworks_record_is_not_believed(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    """GET /v1/artworks/A answered with B's record: B (never listed) was
    inserted and A counted as seen. Now it is a failed check of A."""
    server = fake_api(200, api_key=KEY, malformed_fraction=0, unknown_fraction=0, pending_fraction=0.2)
    env = hostile_env(server, db_url)
    assert_clean(run_cli(["run-once"], env, cwd=tmp_path))
    server.api.faults.wrong_artwork = True
    backdate_checks(engine)  # the unfinished artworks are due a re-check by id
    before = {row.id: row.last_seen_at for row in rows(engine).values()}
    result = run_cli(["run-once", "--no-refresh"], env, cwd=tmp_path)  # the list alone: fine
    assert_clean(result)
    server.api.reset_stats()
    result = run_cli(["run-once"], env, cwd=tmp_path)
    # Three answers in a row not for what was asked: the API is not answering
    # the question; the run stops, and says why.
    assert result.returncode == 5, result.stderr[-2000:]
    assert "answered with the record of another artwork" in result.stderr
    assert server.api.stats.get_requests >= 3
    after = rows(engine)
    assert set(after) == set(before)  # no artwork the list never showed
    pending = {a.id for a in server.api.dataset.items if a.pending}
    newest_page = {a.id for a in server.api.dataset.items[-100:]}  # read again by the list run
    for artwork_id in pending - newest_page:
        assert after[artwork_id].last_seen_at == before[artwork_id]  # not counted as seen


def test_a_spent_quota_that_every_answer_claims_does_not_hold_syncd_back(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    """ "RateLimit-Remaining: 0" and "RateLimit-Reset: 60" on every 200 held
    syncd to about a request a minute; the answers contradict the header (no
    429 ever came), so it slows nothing."""
    server = fake_api(1500, faults=Faults(spent_quota_header=True), api_key=KEY, malformed_fraction=0)
    env = hostile_env(server, db_url, max_requests_per_second="5")
    started = time.monotonic()
    assert_clean(run_cli(["run-once"], env, cwd=tmp_path))
    # 17 requests at 5/s take seconds; believed, the header would take 16 minutes.
    assert time.monotonic() - started < 120
    assert server.api.stats.list_requests >= 16
    assert set(rows(engine)) == {a.id for a in server.api.dataset.valid()}


def test_a_byte_order_mark_before_the_json_is_skipped(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(250, faults=Faults(bom=True), api_key=KEY, malformed_fraction=0, pending_fraction=0.1)
    assert_clean(run_cli(["run-once"], hostile_env(server, db_url), cwd=tmp_path))
    assert set(rows(engine)) == {a.id for a in server.api.dataset.valid()}
    backdate_checks(engine)  # the unfinished artworks are due a re-check: single-artwork bodies
    assert_clean(run_cli(["run-once"], hostile_env(server, db_url), cwd=tmp_path))
    assert server.api.stats.get_requests > 0


@pytest.mark.parametrize("header", ["inf", "1" + "0" * 400, "31536000"])
def test_an_absurd_retry_after_never_wedges_a_run_or_the_next_one(
    header: str, db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    # The first answer is a 429 with that header (scripted: certain, however
    # fast or slow this machine); then a bucket of 3/s below syncd's 5/s.
    server = fake_api(
        200,
        faults=Faults(first_answers="429", rate_limit=3, retry_after=header),
        api_key=KEY,
        malformed_fraction=0,
    )
    # A year-long Retry-After must be clamped to SYNCD_MAX_RETRY_WAIT (3 s
    # here); an unreadable one falls back to jittered backoff, whose sum over
    # a few 429s can pass 3 s by chance, so those get room for several waits.
    budget = "3" if header == "31536000" else "30"
    env = hostile_env(
        server, db_url, page_size="50", max_retry_wait=budget, max_attempts="30", max_requests_per_second="5"
    )
    started = time.monotonic()
    assert_clean(run_cli(["run-once"], env, cwd=tmp_path))
    assert server.api.stats.by_status and server.api.stats.by_status.get(429, 0) > 0
    with engine.connect() as conn:
        until = conn.execute(select(store.state_table.c.rate_limited_until)).scalar()
    # What is persisted is at most SYNCD_MAX_RETRY_WAIT ahead: the next run is not wedged.
    assert until is None or (until - until.now(until.tzinfo)).total_seconds() <= float(budget)
    assert_clean(run_cli(["run-once"], env, cwd=tmp_path))
    assert time.monotonic() - started < 60


def test_api_messages_cannot_forge_log_lines(
    sqlite_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    forged = "\n2026-01-01T00:00:00Z ERROR   syncd: forged line\r\x1b[2K\u2028"
    faults = Faults(error_5xx=0.5, message_suffix=forged)
    server = fake_api(200, faults=faults, api_key=KEY, malformed_fraction=0)
    for log_format in ("text", "json"):
        env = hostile_env(server, sqlite_url, log_format=log_format, max_attempts="30")
        result = run_cli(["run-once", "--full"], env, cwd=tmp_path)
        assert_clean(result)
        lines = result.stderr.splitlines()
        assert any("retrying" in line for line in lines), result.stderr
        for line in lines:
            assert "forged line" not in line or "\\n2026" in line, line
            if log_format == "json":
                json.loads(line)
            else:
                assert line[:4].isdigit(), line  # every line is one of syncd's


def test_bad_keys_and_credentials_are_one_line_without_the_value(tmp_path: Path) -> None:
    env = syncd_env("http://127.0.0.1:9", f"sqlite:///{tmp_path / 'x.db'}")
    key_file = tmp_path / "key"
    cases = {
        "SYNCD_API_KEY_FILE": ("sk-first-line-secret\nsk-second-line-secret", "SYNCD_API_KEY_FILE"),
        "SYNCD_API_KEY": ("sk-ünïcode-secret", "SYNCD_API_KEY: contains a character that is not ASCII"),
        "SYNCD_API_URL": (
            "http://user:hunter2secret@api.example",
            "SYNCD_API_URL: must not contain credentials",
        ),
    }
    for variable, (value, message) in cases.items():
        case_env = dict(env)
        if variable == "SYNCD_API_KEY_FILE":
            key_file.write_text(value)
            del case_env["SYNCD_API_KEY"]
            case_env[variable] = str(key_file)
        else:
            case_env[variable] = value
        result = run_cli(["run-once"], case_env, cwd=tmp_path)
        assert result.returncode == 3, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        for secret in ("sk-first-line-secret", "sk-second-line-secret", "sk-ünïcode-secret", "hunter2secret"):
            assert secret not in result.stderr + result.stdout


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    database = tmp_path / "syncd.db"
    os.symlink(victim, locks.lock_path_of(database))
    server = fake_api(50)
    result = run_cli(["run-once"], syncd_env(server.url, f"sqlite:///{database}"), cwd=tmp_path)
    assert result.returncode == 6, result.stderr
    assert "is a symbolic link; syncd does not follow it" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert victim.read_text() == "precious\n"
    assert server.api.stats.requests == 0


# ------------------------------------------------------------------ property

# Byte- and value-level mutations of one record's JSON, as a proxy or a bug
# would make them. Some keep the record valid, some make it invalid, some make
# the page unreadable (truncation): none may crash syncd or touch another record.
ESCAPES = [b"\\ud800", b"\\udfff", b"\\u0000", b"\\u001b[2K", b"\\n", b"\\u2028"]
NUMBERS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"123456789012345678901234567890", b"-0", b"1e-400"]


def mutate(raw: bytes, choice: tuple[str, int, int]) -> bytes:
    kind, at, size = choice
    at %= max(1, len(raw) - 2)
    if kind == "escape":  # inside the first string value after `at`
        quote = raw.find(b'":"', at)
        if quote < 0:
            quote = raw.find(b'":"')
        return raw[: quote + 3] + ESCAPES[size % len(ESCAPES)] + raw[quote + 3 :]
    if kind == "number":
        colon = raw.find(b'"duration":')
        if colon < 0:
            return raw
        end = raw.find(b",", colon)
        return raw[: colon + 11] + NUMBERS[size % len(NUMBERS)] + raw[end:]
    if kind == "deep":
        depth = 30 + size * 40
        return raw[:-1] + b',"junk":' + b"[" * depth + b"]" * depth + b"}"
    if kind == "control":
        quote = raw.find(b'":"', at)
        if quote < 0:
            return raw
        return raw[: quote + 3] + bytes([size % 32]) + raw[quote + 3 :]  # a raw control byte: not JSON
    if kind == "duplicate_key":
        return raw[:-1] + b',"status":"dup' + str(size).encode() + b'"}'
    if kind == "truncate":
        return raw[: at + 1]
    raise AssertionError(kind)


MUTATION = st.tuples(
    st.sampled_from(["escape", "number", "deep", "control", "duplicate_key", "truncate"]),
    st.integers(0, 10_000),
    st.integers(0, 50),
)


def clear_tables(engine: Engine) -> None:
    with db.writer(engine).begin() as conn:
        for table in ("artwork_results", "txt2img_parameters", "upscaling_parameters", "rejected_records"):
            conn.execute(text(f"DELETE FROM {table}"))
        for table in ("artworks", "sync_runs", "sync_state"):
            conn.execute(text(f"DELETE FROM {table}"))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 39), MUTATION), min_size=1, max_size=4))
def test_property_mutated_pages_never_crash_and_never_touch_intact_records(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], mutations: list[tuple[int, Any]]
) -> None:
    clear_tables(engine)
    # Pending artworks are fetched again by id: their bodies are mutated too.
    server = fake_api(40, seed=9, malformed_fraction=0, pending_fraction=0.3)
    items = server.api.dataset.items
    for index, choice in mutations:
        items[index]._json = mutate(items[index].json(), choice)
    mutated = {items[index].id for index, _ in mutations}
    settings_ = make_settings(server.url, db_url, page_size="25", max_attempts="2")
    try:
        run_once(settings_)
        code = 0
    except SyncdError as exc:
        code = int(exc.exit_code)  # anything else propagates: a crash fails the test
    assert code in (0, 5, 6)
    stored = rows(engine)
    with engine.connect() as conn:
        total, distinct = conn.execute(text("SELECT COUNT(*), COUNT(DISTINCT id) FROM artworks")).one()
    assert total == distinct == len(stored)
    for artwork in items:
        if artwork.id not in mutated and artwork.id in stored:
            assert stored[artwork.id].raw == artwork.value  # intact records exactly
    if code == 0:
        assert {a.id for a in items} - mutated <= set(stored)
    # Healed, the API's answers are whole: the next run completes, and a full
    # one (the daemon's daily reconciliation) stores what was quarantined.
    for artwork in items:
        artwork._json = None
    run_once(settings_)
    run_once(settings_, SyncOptions(full=True))
    assert set(rows(engine)) == {a.id for a in items}
