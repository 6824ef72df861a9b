"""Validation and mapping: every field of both types, absences, each kind of bad record."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from syncd.records import (
    MAX_QUARANTINE_PAYLOAD,
    PARAMETER_COLUMNS,
    ArtworkRows,
    Rejection,
    Unparseable,
    classify,
    classify_page,
    content_hash,
    list_key,
)
from tests.conftest import ID, NOW, txt2img, upscaling


def accept(value: Any) -> ArtworkRows:
    outcome = classify(value, NOW)
    assert isinstance(outcome, ArtworkRows), getattr(outcome, "reason", outcome)
    return outcome


def refuse(value: Any) -> Rejection:
    outcome = classify(value, NOW)
    assert isinstance(outcome, Rejection), f"accepted: {value!r}"
    return outcome


def test_txt2img_maps_every_field() -> None:
    rows = accept(txt2img())
    assert rows.parameters_table == "txt2img_parameters"
    assert rows.parameters_by_column() == {
        "artwork_id": ID,
        "model": "tengrai-20231128-m-d",
        "prompt_mode": "seer",
        "prompt": "cat",
        "negative_prompt": "dog",
        "style": "default",
        "creativity": 3,
        "details": 4,
        "aspect_ratio": "1:1",
        "width": 1216,
        "height": 1216,
        "nsfw": False,
    }
    assert (rows.id, rows.artwork_type, rows.status, rows.duration) == (ID, "txt2img", "done", 12.5)
    assert rows.created_at == "2024-07-29T15:51:28.071000Z"
    assert orjson.loads(rows.raw_json) == txt2img()
    assert rows.results == ((ID, 0, "https://cdn/a.webp"), (ID, 1, "https://cdn/b.webp"))
    assert rows.is_terminal


def test_upscaling_maps_every_field_and_converts_offsets_to_utc() -> None:
    rows = accept(upscaling())
    assert rows.parameters_table == "upscaling_parameters"
    assert rows.parameters_by_column() == {
        "artwork_id": upscaling()["id"],
        "image_url": "https://uploads/x.png",
        "scale_factor": 4,
    }
    assert rows.created_at == "2025-01-02T01:04:05.000000Z"
    assert rows.duration == 3.0


def test_absent_optionals_are_null_not_defaults() -> None:
    rows = accept(txt2img(parameters={}, duration=None, results=None))
    parameters = rows.parameters_by_column()
    assert parameters is not None
    assert {k: v for k, v in parameters.items() if k != "artwork_id"} == dict.fromkeys(
        (
            "model",
            "prompt_mode",
            "prompt",
            "negative_prompt",
            "style",
            "creativity",
            "details",
            "aspect_ratio",
            "width",
            "height",
            "nsfw",
        )
    )
    assert rows.duration is None and rows.results == ()
    record = upscaling(parameters={})
    del record["duration"], record["results"]
    rows = accept(record)
    assert rows.parameters_by_column() == {
        "artwork_id": record["id"],
        "image_url": None,
        "scale_factor": None,
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": None}, "id"),
        ({"id": "not-a-uuid"}, "id"),
        ({"id": 12345}, "id"),
        ({"createdAt": "yesterday"}, "createdAt"),
        ({"createdAt": 1722268288}, "createdAt"),
        ({"createdAt": "2019-12-31T23:59:59Z"}, "createdAt"),
        ({"createdAt": (NOW + timedelta(days=3)).isoformat()}, "createdAt"),
        ({"parameters": "cat"}, "parameters"),
        ({"parameters": None}, "parameters"),
        ({"parameters": ["cat"]}, "parameters"),
        ({"results": "https://cdn/a.webp"}, "results"),
        ({"results": [1, 2]}, "results"),
        ({"status": None}, "status"),
        ({"duration": "12"}, "duration"),
        ({"artworkType": 7}, "artworkType"),
    ],
)
def test_malformed_common_fields_are_rejected_naming_the_field(change: dict[str, Any], field: str) -> None:
    rejection = refuse(txt2img(**change))
    assert rejection.reason.startswith(field), rejection.reason
    assert orjson.loads(rejection.payload) == txt2img(**change)


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"creativity": 0}, "parameters.creativity"),
        ({"creativity": 6}, "parameters.creativity"),
        ({"creativity": "3"}, "parameters.creativity"),
        ({"details": 9}, "parameters.details"),
        ({"width": 511, "height": 600}, "parameters.width"),
        ({"height": 2049}, "parameters.height"),
        ({"width": 2048, "height": 2048}, "parameters"),
        ({"nsfw": "no"}, "parameters.nsfw"),
        ({"prompt": 42}, "parameters.prompt"),
    ],
)
def test_txt2img_values_out_of_documented_range_are_rejected(parameters: dict[str, Any], field: str) -> None:
    assert refuse(txt2img(parameters=parameters)).reason.startswith(field)


@pytest.mark.parametrize("scale", [1, 9, 2.5, "4", True])
def test_upscaling_scale_factor_outside_2_to_8_is_rejected(scale: Any) -> None:
    assert refuse(upscaling(parameters={"scaleFactor": scale})).reason.startswith("parameters.scaleFactor")


def test_missing_required_fields_are_rejected() -> None:
    for name in ("id", "artworkType", "status", "createdAt", "parameters"):
        record = txt2img()
        del record[name]
        assert refuse(record).reason.startswith(name)


def test_unknown_type_is_kept_without_parameter_row() -> None:
    record = txt2img(artworkType="selena", parameters={"whatever": [1, {"deep": True}]}, status="processing")
    rows = accept(record)
    assert rows.artwork_type == "selena" and rows.parameters_table is None and rows.parameters is None
    assert orjson.loads(rows.raw_json) == record and not rows.is_terminal


def test_unknown_type_still_needs_the_common_fields() -> None:
    assert refuse(txt2img(artworkType="selena", id="nope")).reason.startswith("id")


@pytest.mark.parametrize(
    "text",
    [
        "Robert'); DROP TABLE artworks;--",
        'quote " and \\ backslash',
        "multi\nline\r\n\ttab",
        "猫 🐈 ‮rtl ünï",
        "",
        " padded ",
    ],
)
def test_strings_are_kept_exactly(text: str) -> None:
    rows = accept(txt2img(parameters={"prompt": text, "negativePrompt": text, "style": text}))
    parameters = rows.parameters_by_column()
    assert parameters is not None
    assert parameters["prompt"] == text and parameters["negative_prompt"] == text


def test_new_enumerated_values_are_accepted() -> None:
    rows = accept(txt2img(parameters={"model": "tengrai-2026", "style": "new-style", "aspectRatio": "5:4"}))
    parameters = rows.parameters_by_column()
    assert parameters is not None and parameters["style"] == "new-style"


@pytest.mark.parametrize("value", [None, 5, "text", ["a", "list"], True])
def test_elements_that_are_not_objects_are_rejected(value: Any) -> None:
    assert refuse(value).reason.startswith("record: expected a JSON object")


def test_absurdly_large_record_is_rejected_and_payload_cut() -> None:
    rejection = refuse(txt2img(parameters={"prompt": "x" * 2_000_000}))
    assert "over the" in rejection.reason
    assert len(rejection.payload) < MAX_QUARANTINE_PAYLOAD + 100 and rejection.payload.endswith(
        "characters in all]"
    )
    assert rejection.artwork_id == ID


def test_unparseable_element_is_rejected_with_its_text() -> None:
    rejection = refuse(Unparseable(text='{"id": [[[[', error="recursion limit exceeded"))
    assert rejection.payload == '{"id": [[[[' and "not parseable" in rejection.reason


def test_page_classification_keeps_every_element_in_one_bucket_and_dedupes_ids() -> None:
    newer = txt2img(status="failed")
    page = classify_page([txt2img(), upscaling(), "junk", newer, txt2img(id="bad")], NOW)
    assert len(page.rows) == 2 and page.duplicates == 1 and len(page.rejected) == 2
    by_id = {rows.id: rows for rows in page.rows}
    assert by_id[ID].status == "failed"  # the later occurrence wins


def test_content_hash_ignores_key_order_but_not_values() -> None:
    record = txt2img()
    shuffled = dict(reversed(list(record.items())))
    assert content_hash(record) == content_hash(shuffled)
    changed = copy.deepcopy(record)
    changed["parameters"]["prompt"] = "dog"
    assert content_hash(record) != content_hash(changed)


def test_list_key_reads_id_and_date_cheaply_with_the_same_date_rules() -> None:
    assert list_key(txt2img(), NOW) == (ID, datetime(2024, 7, 29, 15, 51, 28, 71000, tzinfo=UTC))
    assert list_key(txt2img(createdAt="2019-01-01T00:00:00Z"), NOW) == (ID, None)
    assert list_key(txt2img(id=5, createdAt="bad"), NOW) == (None, None)
    assert list_key("junk", NOW) == (None, None)


def test_records_stored_with_the_same_content_are_not_validated_again() -> None:
    stored = {ID: content_hash(txt2img()), upscaling()["id"]: "an older hash"}
    other = txt2img(id="9b2e1a44-0000-4000-8000-000000000001", artworkType="selena", parameters={})
    stored[other["id"]] = content_hash(other)
    page = classify_page([txt2img(), upscaling(), other, txt2img(status="failed")], NOW, stored)
    # the last occurrence of ID changed content: it wins and is validated
    assert [rows.id for rows in page.rows] == [ID, upscaling()["id"]]
    assert page.rows[0].status == "failed"
    assert page.unchanged_ids == [other["id"]] and page.duplicates == 1
    assert page.unknown_types == 1  # counted even though it was not validated again
    unchanged_only = classify_page([txt2img()], NOW, {ID: content_hash(txt2img())})
    assert unchanged_only.rows == [] and unchanged_only.unchanged_ids == [ID]
    # an invalid record never matches a stored hash (only valid records are stored)
    assert classify_page([txt2img(id="nope")], NOW, stored).rejected


def test_parameter_rows_follow_the_tables_column_order() -> None:
    from syncd import models

    for table in (models.Txt2ImgParameters.__table__, models.UpscalingParameters.__table__):
        assert PARAMETER_COLUMNS[table.name] == tuple(column.name for column in table.columns)


@pytest.mark.parametrize(
    "odd", [10**24, -(10**30), "\ud800 alone"], ids=["huge", "huge-negative", "surrogate"]
)
def test_a_bad_record_holding_what_orjson_cannot_write_is_quarantined_whole(odd: object) -> None:
    # Refused for its status; the value orjson refuses must not turn the
    # quarantine into a crash (every run after it would fail on the same page).
    record = {**txt2img(), "status": 5, "junk": odd}
    rejection = refuse(record)
    assert "status" in rejection.reason
    assert json.loads(rejection.payload)["id"] == ID  # (orjson refuses a lone surrogate even escaped)
    assert (str(odd) if isinstance(odd, int) else "\\ud800") in rejection.payload
