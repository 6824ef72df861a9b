"""Pure: the fake API's artworks, deterministic from a seed.

Records are created in time order (``createdAt`` strictly increasing with the
creation index); the served list shows them newest-first, oldest-first or
shuffled. Tests use the same dataset object as ground truth.

With ``image_origin`` the image URLs (results, upscaling inputs) point at the
fake image server (``syncd.fakeapi.images``) instead of hosts that do not
exist. ``expire`` plays the API's retention: it deletes an artwork and its
images a fixed time after creation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

STYLES = (
    "default", "portraiture", "landscape", "photographer", "analog", "car", "food",
    "horror", "stained-glass", "impasto", "abstract-ink", "illustration", "aquarelle",
    "water-cute", "sphericute", "fairytale", "machinart", "isometric", "logo",
    "abstractpen", "lineart", "manga", "infiny-weave", "infiny-pattern", "infiny-flow",
)  # fmt: skip
MODELS = ("tengrai-20231128-m-d", "tengrai-20240423-m-f")
ASPECT_RATIOS = ("1:1", "7:9", "2:3", "4:7", "9:16", "9:21", "9:7", "3:2", "7:4", "16:9", "21:9")
UNKNOWN_TYPES = ("selena", "selena_variete", "face_refiner", "detailer_upscaler", "upscaling_v2")
WORDS = (
    "cat", "castle", "neon", "forest", "portrait", "rainy", "street", "dragon", "sunset",
    "ocean", "robot", "garden", "mountain", "city", "vintage", "glass", "golden", "misty",
)  # fmt: skip
HOSTILE_PROMPTS = (
    "Robert'); DROP TABLE artworks;--",
    'a "quoted" prompt with \\ backslash',
    "line one\nline two\ttabbed",
    "ünïcödé 猫 🐈 ‮rtl",
    "%s %d {0} ${x} $1",
    "",
)
HOSTILE_KINDS = (
    "huge_prompt",
    "deep_nesting",
    "future_date",
    "ancient_date",
    "duplicate_id",
    "junk_parameters",
)
# Hostile records a real service might send, each a byte-level attack that once
# stopped every later sync (issue: nothing the API sends can stop the sync).
# ``Dataset.poison`` serves one artwork's JSON as each kind; syncd must
# quarantine it (or store it exactly, for "control") and go on.
POISONS = (
    "surrogate",  # a lone surrogate escape: not valid JSON for a strict parser
    "nan",  # a NaN duration: not JSON at all
    "huge_number",  # a duration beyond a double
    "deep",  # parameters nested 1,000 deep
    "nul",  # U+0000 in the prompt, which PostgreSQL cannot store
    "long_status",  # a status longer than its varchar(64)
    "far_date",  # 9999-12-31T23:59:59-01:00: the year 10000 in UTC
    "id_newline",  # the id with a trailing newline: a second row for one artwork
    "long_id",  # an id of 200 characters: longer than any id column
    "key_echo",  # the API key inside the record
    "key_encoded",  # the API key inside the record, base64'ed with "Bearer " and as hex
    "control",  # a prompt that forges a log line: valid, stored exactly
    "big_integer",  # a 22-digit seed among the parameters: valid, its digits kept exactly
    "id_upper",  # the id in upper case: valid, the same artwork (one row)
)
# Poisons that leave the record valid: stored, not quarantined.
VALID_POISONS = ("control", "big_integer", "id_upper")
MALFORMED_KINDS = (
    "missing_id", "bad_uuid", "bad_created_at", "parameters_not_object",
    "creativity_out_of_range", "results_not_list", "scale_factor_out_of_range",
    "width_too_small", "not_an_object", "wrong_type_nsfw",
)  # fmt: skip
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
# Valid createdAt values of a large account must still end in the past (syncd
# rejects dates more than a day ahead): gaps shrink so that N records fit
# between EPOCH and HORIZON. Up to ~220,000 records the gaps are 1-600 s.
HORIZON = datetime(2026, 6, 1, tzinfo=UTC)
MAX_GAP_SECONDS = 600
# Image formats of an image origin's URLs, as the real service mixes them:
# mostly WebP results, some PNG and JPEG (uploads especially).
IMAGE_EXTENSIONS = ("webp",) * 7 + ("png",) * 2 + ("jpg",)


def image_extension(key: str) -> str:
    """The extension of the image named ``key``: from a hash, not the dataset's
    random generator, so that an image origin leaves every other value as it was."""
    digest = hashlib.sha256(key.encode()).digest()
    return IMAGE_EXTENSIONS[int.from_bytes(digest[:4], "big") % len(IMAGE_EXTENSIONS)]


def result_url(image_origin: str | None, artwork_id: str, n: int) -> str:
    if image_origin is None:
        return f"https://cdn.tengr.ai/artworks/{artwork_id}/{n}.webp"
    return f"{image_origin}/artworks/{artwork_id}/{n}.{image_extension(f'artworks/{artwork_id}/{n}')}"


def upload_url(image_origin: str | None, index: int) -> str:
    if image_origin is None:
        return f"https://uploads.example/{index}.png"
    return f"{image_origin}/uploads/{index}.{image_extension(f'uploads/{index}')}"


def _poisoned(kind: str, value: dict[str, Any], api_key: str) -> bytes:
    """The JSON bytes of ``value`` turned into a hostile record of ``kind``."""
    record = dict(value)
    if kind == "surrogate":
        record["parameters"] = {**record["parameters"], "prompt": "bad SURROGATE here"}
        return orjson.dumps(record).replace(b"SURROGATE", b"\\ud800")
    if kind in ("nan", "huge_number"):
        record["duration"] = 0.123456
        return orjson.dumps(record).replace(b"0.123456", b"NaN" if kind == "nan" else b"1e400")
    if kind == "deep":
        head = orjson.dumps({k: v for k, v in record.items() if k != "parameters"})[:-1]
        return head + b',"parameters":{"junk":' + b"[" * 1000 + b"]" * 1000 + b"}}"
    if kind == "nul":
        record["parameters"] = {**record["parameters"], "prompt": "before\x00after"}
        record["results"] = ["https://cdn.tengr.ai/a\x00b.webp"]
    elif kind == "long_status":
        record["status"] = "done-" + "x" * 200
    elif kind == "far_date":
        record["createdAt"] = "9999-12-31T23:59:59-01:00"
    elif kind == "id_newline":
        record["id"] += "\n"
    elif kind == "long_id":
        record["id"] = record["id"].replace("-", "") * 6 + "x" * 8
    elif kind == "key_echo":
        record["parameters"] = {**record["parameters"], "prompt": f"the key is {api_key}"}
    elif kind == "key_encoded":
        bearer = base64.b64encode(f"Bearer {api_key}".encode()).decode()
        record["parameters"] = {
            **record["parameters"],
            "prompt": f"auth {bearer} sig {api_key.encode().hex()}",
        }
    elif kind == "big_integer":
        record["parameters"] = {**record["parameters"], "seed": 123456789}
        return orjson.dumps(record).replace(b'"seed":123456789', b'"seed":1180591620717411303425')
    elif kind == "id_upper":
        record["id"] = record["id"].upper()
    elif kind == "control":
        forged = "\n2026-01-01T00:00:00Z ERROR   syncd: forged line\r\x1b[2K"
        record["parameters"] = {
            **record["parameters"],
            "prompt": f"a cat{forged}",
            "negativePrompt": "\u2028",
        }
    return orjson.dumps(record)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class FakeArtwork:
    """One record of the fake: its JSON value and what tests need to know of it."""

    index: int
    value: Any  # usually a dict; a malformed record may be anything
    malformed: str | None = None
    pending: bool = False
    created_wall: float | None = None  # time.time() of a live artwork's creation (None: historical)
    _json: bytes | None = field(default=None, repr=False)

    @property
    def id(self) -> str | None:
        value = self.value
        return value.get("id") if isinstance(value, dict) and isinstance(value.get("id"), str) else None

    def json(self) -> bytes:
        if self._json is None:
            try:
                self._json = orjson.dumps(self.value)
            except orjson.JSONEncodeError:  # an integer beyond 64 bits (a "big_integer" poison)
                self._json = json.dumps(self.value, separators=(",", ":")).encode()
        return self._json

    def finish(self, rng: random.Random, image_origin: str | None = None) -> None:
        """A pending artwork completes: terminal status and its results appear."""
        if not self.pending or not isinstance(self.value, dict) or self.malformed is not None:
            return  # a malformed record stays as it is: finishing it would mend it
        # A malformed record may lack its id: its results are named by its index.
        results = _results(rng, str(self.value.get("id", self.index)), image_origin)
        self.value = dict(self.value, status="done", results=results)
        self.value["duration"] = round(rng.uniform(2, 40), 3)
        self.pending = False
        self._json = None


def _results(rng: random.Random, artwork_id: str, image_origin: str | None = None) -> list[str]:
    return [result_url(image_origin, artwork_id, n) for n in range(rng.choice((1, 1, 2, 4)))]


def _prompt(rng: random.Random) -> str:
    if rng.random() < 0.03:
        return rng.choice(HOSTILE_PROMPTS)
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))


def _txt2img_parameters(rng: random.Random) -> dict[str, Any]:
    params: dict[str, Any] = {"prompt": _prompt(rng)}
    optional: dict[str, Any] = {
        "model": rng.choice(MODELS),
        "promptMode": rng.choice(("seer", "servitor")),
        "negativePrompt": " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 4))),
        "style": rng.choice(STYLES),
        "creativity": rng.randint(1, 5),
        "details": rng.randint(1, 5),
        "nsfw": rng.random() < 0.05,
    }
    for key, value in optional.items():
        if rng.random() < 0.85:  # absent fields are part of the contract
            params[key] = value
    if rng.random() < 0.2:
        params["width"], params["height"] = rng.choice(((512, 768), (1216, 1216), (832, 1216), (2048, 512)))
    elif rng.random() < 0.9:
        params["aspectRatio"] = rng.choice(ASPECT_RATIOS)
    return params


class Dataset:
    """The fake account: artworks in creation order, plus how they are listed."""

    def __init__(
        self,
        count: int,
        seed: int = 0,
        *,
        unknown_fraction: float = 0.01,
        malformed_fraction: float = 0.005,
        pending_fraction: float = 0.0,
        hostile_fraction: float = 0.0,
        start: datetime = EPOCH,
        end: datetime = HORIZON,
        image_origin: str | None = None,
    ) -> None:
        """``end`` other than HORIZON makes a recent account: the ``count``
        records are spread evenly over ``start``..``end`` (the newest close to
        ``end``, none after it). At HORIZON they are 1-600 s apart from
        ``start``, gaps shrinking only for accounts too large to fit.

        ``image_origin`` ("http://host:port"): image URLs point there, with
        extensions from a hash, and the random draws stay those of None."""
        self.rng = random.Random(seed)
        self.unknown_fraction = unknown_fraction
        self.malformed_fraction = malformed_fraction
        self.pending_fraction = pending_fraction
        self.hostile_fraction = hostile_fraction
        self.image_origin = image_origin.rstrip("/") if image_origin else None
        self.next_time = start
        room = (end - start).total_seconds()
        if room <= 0:
            raise ValueError(f"end {end} is not after start {start}")
        # The mean gap is about max_gap / 2: 1.8x room / count leaves 10% spare.
        self.max_gap = max(2, min(MAX_GAP_SECONDS, int(1.8 * room / max(count, 1))))
        # A recent account: (start, window in ms, records) of the initial spread.
        self._spread: tuple[datetime, int, int] | None = None
        if end != HORIZON:
            if room * 1000 < count:
                raise ValueError(f"{count} artworks do not fit 1 ms apart between {start} and {end}")
            self._spread = (start, int(room * 1000), count)
        self.created = 0
        self.items: list[FakeArtwork] = []  # live records, oldest first
        self.ever: dict[str, FakeArtwork] = {}  # every identifiable record ever created
        self._healthy: dict[int, Any] = {}  # poisoned artworks' values, by index
        # The live records by id and by index: the image server looks one up per
        # request. Tests also edit ``items`` directly, so a lookup rebuilds the
        # index when the list is no longer the one indexed (see ``_index``).
        self._by_id: dict[str, FakeArtwork] = {}
        self._by_index: dict[int, FakeArtwork] = {}
        self._shared_ids: set[str] = set()  # ids more than one live record carries
        self._indexed: tuple[int, int] = (0, 0)
        # Retention (``expire``): when it started (wall clock), and the place of
        # each record then present among those made before it.
        self.retention_started: float | None = None
        self._retention_rank: dict[int, int] | None = None
        self._added_at: dict[int, float] = {}  # historical records added after retention started
        self.add(count)

    # ------------------------------------------------------------ mutation

    def add(self, count: int, *, pending: bool | None = None, live: bool = False) -> list[FakeArtwork]:
        """``live``: created now (``createdAt`` the wall clock, still after every
        earlier one), as artworks made while syncd runs; otherwise in the past."""
        self._index()
        added = [self._make(pending, live) for _ in range(count)]
        self.items.extend(added)
        for artwork in added:
            if artwork.id is not None:
                self.ever.setdefault(artwork.id, artwork)
            self._index_one(artwork)
            if not live and self.retention_started is not None:
                self._added_at[artwork.index] = time.time()
        self._indexed = (id(self.items), len(self.items))
        return added

    def date_ahead(self, artwork: FakeArtwork, ahead: timedelta) -> None:
        """Date one artwork ``ahead`` of the wall clock (a server whose clock ran
        ahead when it was made) without moving the clock of those made after
        it: artworks added later are dated before it, and are listed above it."""
        assert isinstance(artwork.value, dict)
        artwork.value = dict(artwork.value, createdAt=iso(datetime.now(UTC) + ahead))
        artwork._json = None

    def delete_oldest(self, count: int) -> list[FakeArtwork]:
        self._index()
        removed, self.items = self.items[:count], self.items[count:]
        self._unindex(removed)
        return removed

    def expire(self, now: float, retention: float) -> list[FakeArtwork]:
        """Delete the records whose time is up, as the API does ``retention``
        seconds after creation; returns them.

        A live record (``created_wall``) lives ``retention`` seconds. Records
        made before retention started (at the first call, or
        ``retention_started``) die as if the account had always been served:
        the i-th oldest of n at ``retention_started + retention * (i + 1) / n``,
        over one retention window. Records leave oldest first: one whose time
        is up waits behind an older one whose time is not (only a live record
        made before retention started can find itself there)."""
        if retention <= 0:
            return []
        if self.retention_started is None:
            self.retention_started = now
        if self._retention_rank is None:
            self._retention_rank = {a.index: rank for rank, a in enumerate(self.items)}
        due = 0
        for artwork in self.items:
            if self._expires_at(artwork, retention) > now:
                break
            due += 1
        return self.delete_oldest(due) if due else []

    def _expires_at(self, artwork: FakeArtwork, retention: float) -> float:
        if artwork.created_wall is not None:
            return artwork.created_wall + retention
        assert self.retention_started is not None
        assert self._retention_rank is not None
        rank = self._retention_rank.get(artwork.index)
        if rank is None:  # made in the past, but only after retention started
            return self._added_at.get(artwork.index, self.retention_started) + retention
        return self.retention_started + retention * (rank + 1) / len(self._retention_rank)

    def finish_due(self, artworks: list[FakeArtwork], after: float, now: float) -> None:
        """Live pending artworks at least ``after`` seconds old finish (the API's
        processing takes that long)."""
        for artwork in artworks:
            if artwork.pending and artwork.created_wall is not None and now - artwork.created_wall >= after:
                artwork.finish(self.rng, self.image_origin)

    def finish_pending(self) -> int:
        pending = [a for a in self.items if a.pending]
        for artwork in pending:
            artwork.finish(self.rng, self.image_origin)
        return len(pending)

    def find(self, artwork_id: str) -> FakeArtwork | None:
        """The live record of this id (the oldest, should two share it)."""
        self._index()
        return self._by_id.get(artwork_id.lower())  # a UUID's case carries nothing

    def find_index(self, index: int) -> FakeArtwork | None:
        """The live record created ``index``-th."""
        self._index()
        return self._by_index.get(index)

    def _index(self) -> None:
        """Rebuild the lookup index if ``items`` was changed behind its back."""
        if self._indexed == (id(self.items), len(self.items)):
            return
        self._by_id, self._by_index, self._shared_ids = {}, {}, set()
        for artwork in self.items:
            self._index_one(artwork)
        self._indexed = (id(self.items), len(self.items))

    def _index_one(self, artwork: FakeArtwork) -> None:
        self._by_index[artwork.index] = artwork
        artwork_id = artwork.id.lower() if artwork.id is not None else None
        if artwork_id is not None and self._by_id.setdefault(artwork_id, artwork) is not artwork:
            self._shared_ids.add(artwork_id)

    def _unindex(self, removed: list[FakeArtwork]) -> None:
        for artwork in removed:
            self._by_index.pop(artwork.index, None)
            if artwork.id is not None and self._by_id.get(artwork.id.lower()) is artwork:
                del self._by_id[artwork.id.lower()]
        if any(a.id is not None and a.id.lower() in self._shared_ids for a in removed):
            self._indexed = (0, 0)  # another record may carry the id: rebuild (rare)
        else:
            self._indexed = (id(self.items), len(self.items))

    def poison(self, kinds: list[str], api_key: str) -> dict[str, FakeArtwork]:
        """Serve one artwork of the list as each kind of hostile record (see POISONS).

        Which artwork does not change with the data: the ones at fixed places
        among the oldest. Poisoned artworks count as malformed, except
        "control" (a valid record syncd must store exactly); ``heal`` undoes it.
        """
        poisoned: dict[str, FakeArtwork] = {}
        candidates = [a for a in self.items if a.malformed is None and a.id is not None]
        for number, kind in enumerate(kinds):
            if kind not in POISONS:
                raise ValueError(f"unknown poison {kind!r}; known: {', '.join(POISONS)}")
            artwork = candidates[(number * 7 + 3) % len(candidates)]
            self._healthy.setdefault(artwork.index, artwork.value)
            artwork._json = _poisoned(kind, self._healthy[artwork.index], api_key)
            if kind in VALID_POISONS:
                artwork.value = json.loads(artwork._json)  # exact integers, as the record says
            else:
                artwork.malformed = f"poison:{kind}"
            poisoned[kind] = artwork
        return poisoned

    def heal(self) -> None:
        """Every poisoned artwork is served as it was again."""
        for artwork in self.items:
            if artwork.index in self._healthy:
                artwork.value = self._healthy.pop(artwork.index)
                artwork.malformed = None
                artwork._json = None

    # ------------------------------------------------------------ views

    def valid(self) -> list[FakeArtwork]:
        return [a for a in self.items if a.malformed is None]

    def ordered(self, order: str, shuffle_seed: int = 0) -> list[FakeArtwork]:
        if order == "oldest_first":
            return list(self.items)
        if order == "newest_first":
            return self.items[::-1]
        # Unordered but stable, like a hash-partitioned store: a new artwork
        # lands anywhere, and the others keep their relative order.
        return sorted(self.items, key=lambda a: hash((shuffle_seed, a.index)))

    def page(self, order: str, skip: int, limit: int) -> list[FakeArtwork]:
        """ordered(order)[skip:skip + limit], without copying a large list per request."""
        if order == "oldest_first":
            return self.items[skip : skip + limit]
        if order == "newest_first":
            end = len(self.items) - skip
            return self.items[max(0, end - limit) : max(0, end)][::-1]
        key = (len(self.items), self.created, self.items[0].index if self.items else -1)
        if getattr(self, "_shuffled_key", None) != key:
            self._shuffled, self._shuffled_key = self.ordered(order), key
        return self._shuffled[skip : skip + limit]

    # ------------------------------------------------------------ records

    def _make(self, pending: bool | None, live: bool = False) -> FakeArtwork:
        rng = self.rng
        index = self.created
        self.created += 1
        created_wall = None
        if live:  # now, and still after every earlier artwork (the list's order holds)
            created_wall = time.time()
            now = datetime.fromtimestamp(created_wall, UTC)
            self.next_time = max(self.next_time + timedelta(milliseconds=1), now.replace(microsecond=0))
        elif self._spread is not None and index < self._spread[2]:
            # Slot ``index`` of ``count`` equal slots of the window, somewhere inside
            # it: never before ``start``, never after ``end``, newest near ``end``.
            start, window_ms, count = self._spread
            offset_ms = int(window_ms * (index + rng.uniform(0.05, 0.95)) / count)
            self.next_time = max(
                self.next_time + timedelta(milliseconds=1), start + timedelta(milliseconds=offset_ms)
            )
        else:
            self.next_time += timedelta(
                seconds=rng.randint(1, self.max_gap), milliseconds=rng.randint(0, 999)
            )
        artwork_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        roll = rng.random()
        if roll < self.unknown_fraction:
            kind = rng.choice(UNKNOWN_TYPES)
            parameters: dict[str, Any] = {
                "imageUrl": f"https://img.example/{index}.png",
                "strength": rng.random(),
            }
        elif rng.random() < 0.7:
            kind, parameters = "txt2img", _txt2img_parameters(rng)
        else:
            kind = "upscaling"
            parameters = {"imageUrl": upload_url(self.image_origin, index)}
            if rng.random() < 0.9:
                parameters["scaleFactor"] = rng.randint(2, 8)
        is_pending = (rng.random() < self.pending_fraction) if pending is None else pending
        status = "processing" if is_pending else rng.choice(("done",) * 19 + ("failed",))
        value: dict[str, Any] = {
            "id": artwork_id,
            "artworkType": kind,
            "parameters": parameters,
            "duration": None if is_pending else round(rng.uniform(1, 60), 3),
            "results": []
            if is_pending or status == "failed"
            else _results(rng, artwork_id, self.image_origin),
            "status": status,
            "createdAt": iso(self.next_time),
        }
        artwork = FakeArtwork(index=index, value=value, pending=is_pending, created_wall=created_wall)
        if rng.random() < self.malformed_fraction:
            self._break(artwork, rng.choice(MALFORMED_KINDS))
        elif self.hostile_fraction and rng.random() < self.hostile_fraction:
            self._hostile(artwork, rng.choice(HOSTILE_KINDS))
        return artwork

    def _hostile(self, artwork: FakeArtwork, kind: str) -> None:
        """Input a real service might send on a bad day; syncd documents a rule for each."""
        value = dict(artwork.value)
        artwork.value = value
        if kind == "huge_prompt":  # quarantined: over the record size limit
            value.update(artworkType="txt2img", parameters={"prompt": "cat " * 600_000})
            artwork.malformed = kind
        elif kind == "deep_nesting":  # quarantined: too deep to parse on its own
            depth = 3000
            head = orjson.dumps({k: v for k, v in value.items() if k != "parameters"})[:-1]
            artwork._json = head + b',"parameters":{"junk":' + b"[" * depth + b"]" * depth + b"}}"
            artwork.malformed = kind
        elif kind == "future_date":  # quarantined
            value["createdAt"] = "2999-01-01T00:00:00.000Z"
            artwork.malformed = kind
        elif kind == "ancient_date":  # quarantined
            value["createdAt"] = "1999-12-31T23:59:59.000Z"
            artwork.malformed = kind
        elif kind == "duplicate_id" and self.items:  # accepted: one row per id
            value["id"] = self.rng.choice(self.items).id or value["id"]
        elif kind == "junk_parameters":  # accepted: unknown keys stay in raw only
            value["parameters"] = {**value["parameters"], "x" * 40: {"a": [[[["deep"]]]]}, "ключ": "значение"}

    @staticmethod
    def _break(artwork: FakeArtwork, kind: str) -> None:
        value = dict(artwork.value)
        if kind == "missing_id":
            del value["id"]
        elif kind == "bad_uuid":
            value["id"] = "artwork-" + value["id"][:8]
        elif kind == "bad_created_at":
            value["createdAt"] = "last tuesday"
        elif kind == "parameters_not_object":
            value["parameters"] = "prompt=cat"
        elif kind == "creativity_out_of_range":
            value.update(artworkType="txt2img", parameters={"prompt": "x", "creativity": 9})
        elif kind == "results_not_list":
            value["results"] = "https://cdn.tengr.ai/one.webp"
        elif kind == "scale_factor_out_of_range":
            value.update(
                artworkType="upscaling", parameters={"imageUrl": "https://u/x.png", "scaleFactor": 1}
            )
        elif kind == "width_too_small":
            value.update(artworkType="txt2img", parameters={"width": 64, "height": 64})
        elif kind == "wrong_type_nsfw":
            value.update(artworkType="txt2img", parameters={"nsfw": "yes"})
        elif kind == "not_an_object":
            artwork.value, artwork.malformed = [value["id"], "not", "an", "object"], kind
            return
        artwork.value, artwork.malformed = value, kind
