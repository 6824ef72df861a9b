"""``syncd mock-api``: the fake API's command line, loaded only when it runs.

(The ``syncd`` group finds it lazily: the operator's commands never import
the fake.)
"""

from __future__ import annotations

import errno
import signal
from typing import Any

import click

from syncd.clitools import handle_errors
from syncd.errors import ConfigError, listen_reason
from syncd.fakeapi.data import POISONS


@click.command("mock-api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--count", default=1000, show_default=True, type=int, help="Artworks to start with.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same data.")
@click.option("--api-key", default="demo-key", show_default=True, help="The Bearer key it accepts.")
@click.option("--forbidden-key", multiple=True, help="A key answered with 403.")
@click.option(
    "--order",
    type=click.Choice(["newest_first", "oldest_first", "random"]),
    default="newest_first",
    show_default=True,
)
@click.option(
    "--unknown-fraction",
    default=0.01,
    show_default=True,
    type=float,
    help="Share of artworks of a type syncd does not know.",
)
@click.option(
    "--malformed-fraction", default=0.005, show_default=True, type=float, help="Share of malformed records."
)
@click.option(
    "--pending-fraction",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of artworks still processing.",
)
@click.option(
    "--hostile-fraction",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of hostile records (huge, deeply nested, odd dates, reused ids).",
)
@click.option(
    "--poison",
    "poisons",
    multiple=True,
    type=click.Choice(POISONS),
    help="Serve one artwork as this kind of hostile record (repeatable).",
)
@click.option(
    "--content-encoding", default="", help="This Content-Encoding on 200 answers (body left plain)."
)
@click.option("--bom", is_flag=True, help="A UTF-8 byte-order mark before every 200 body.")
@click.option("--retry-after", default="", help="Every 429's Retry-After header, verbatim (e.g. inf).")
@click.option("--dribble", default=0.0, type=float, help="Seconds between the bytes of every 200 body.")
@click.option(
    "--echo-key",
    is_flag=True,
    help="Answers repeat the key they were sent (as is, percent-encoded, base64, hex).",
)
@click.option(
    "--compressed",
    default="",
    help="200 bodies really encoded: gzip, deflate, 'gzip, gzip', br; 'bomb:gzip' or 'bomb:gzip, gzip' "
    "for 1 GiB of spaces gzip'ed once or twice.",
)
@click.option(
    "--short-pages",
    default="",
    metavar="FROM-TO:BY",
    help="At most limit - BY items for any skip in FROM..TO (a short page mid-list), e.g. 300-349:7.",
)
@click.option(
    "--hidden", default=0, show_default=True, type=int, help="Leave the N oldest out of every list answer."
)
@click.option(
    "--wrong-artwork", is_flag=True, help="GET /v1/artworks/{id} answers with another artwork's record."
)
@click.option(
    "--exact-id-case",
    is_flag=True,
    help="GET /v1/artworks/{id} finds an artwork only by its id spelled exactly as listed.",
)
@click.option(
    "--spent-quota-header",
    is_flag=True,
    help="'RateLimit-Remaining: 0' and 'RateLimit-Reset: 60' on every 200 (a header the answers contradict).",
)
@click.option(
    "--message-suffix", default="", help="Appended to every error message (e.g. a forged log line)."
)
@click.option(
    "--rate-limit",
    default=0.0,
    show_default=True,
    type=float,
    help="Server-side limit: requests/s (token bucket, burst of one second) before 429 with Retry-After (0: none).",
)
@click.option(
    "--latency-ms",
    default=0.0,
    show_default=True,
    type=float,
    help="Milliseconds before every API answer, as from a remote server (requests served concurrently).",
)
@click.option(
    "--rate-limit-headers", is_flag=True, help="Send RateLimit-Limit/-Remaining/-Reset/-Policy headers."
)
@click.option(
    "--rate-limit-blocks",
    is_flag=True,
    help="After a 429, refuse every request until its Retry-After elapses (a penalty box).",
)
@click.option(
    "--error-rate", default=0.0, show_default=True, type=float, help="Share of 500/502/503/504 answers."
)
@click.option(
    "--truncate-rate", default=0.0, show_default=True, type=float, help="Share of bodies cut short."
)
@click.option(
    "--non-json-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of 200 answers with an HTML body.",
)
@click.option(
    "--reset-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of connections closed without answer.",
)
@click.option(
    "--slow-rate", default=0.0, show_default=True, type=float, help="Share of answers delayed by --delay."
)
@click.option(
    "--delay", default=0.0, show_default=True, type=float, help="Seconds of delay for slow answers."
)
@click.option(
    "--add-per-request",
    default=0,
    show_default=True,
    type=int,
    help="Artworks created before each list request.",
)
@click.option(
    "--finish-after",
    default=0.0,
    show_default=True,
    type=float,
    help="Seconds after which a pending artwork created while serving finishes (0: never).",
)
@click.option(
    "--delete-oldest-per-request",
    default=0,
    show_default=True,
    type=int,
    help="Oldest artworks deleted before each list request.",
)
@click.option(
    "--recent-days",
    default=0.0,
    show_default=True,
    type=float,
    help="Spread createdAt over the last N days up to now (0: from 2024 on, 1-600 s apart).",
)
@click.option(
    "--retention-seconds",
    default=0.0,
    show_default=True,
    type=float,
    help="Delete artworks (and their images) this long after creation, as the API does after 8 days (0: never).",
)
@click.option(
    "--images-port",
    default=None,
    type=int,
    help="Serve the artworks' images on a second origin at this port (0 picks a free one); default: none.",
)
@click.option(
    "--image-latency-ms",
    default=0.0,
    show_default=True,
    type=float,
    help="Milliseconds before every image answer.",
)
@click.option(
    "--image-error-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of image requests answered 5xx.",
)
@click.option(
    "--image-gone-fraction",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of image URLs answered 404 every time, as if expired.",
)
@click.option(
    "--image-wrong-type-fraction",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of image URLs answered 200 with an HTML page.",
)
@click.option(
    "--image-redirect-fraction",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of image URLs answered 302 to another path of the image origin.",
)
@click.option(
    "--image-size", default=0, show_default=True, type=int, help="Every image this many bytes (0: 2-256 KiB)."
)
@click.option(
    "--image-rate-limit",
    default=0.0,
    show_default=True,
    type=float,
    help="Image requests/s (token bucket, burst of one second) before 429 (0: none).",
)
@handle_errors
def mock_api_command(
    host: str,
    port: int,
    count: int,
    seed: int,
    api_key: str,
    forbidden_key: tuple[str, ...],
    order: str,
    unknown_fraction: float,
    malformed_fraction: float,
    pending_fraction: float,
    hostile_fraction: float,
    poisons: tuple[str, ...],
    recent_days: float,
    retention_seconds: float,
    images_port: int | None,
    **faults: Any,
) -> None:
    """Serve a fake Tengr.ai v1 API (with fault injection) until interrupted.

    With --images-port, the artworks' images (results, upscaling inputs) are
    served on a second origin, which the artworks' URLs name.

    \b
    Example:
      syncd mock-api --port 8080 --count 5000 --rate-limit 20 --error-rate 0.1
      syncd mock-api --poison surrogate --poison nul --content-encoding gzip --echo-key
      syncd mock-api --count 40000 --latency-ms 400 --rate-limit 10   # a remote, rate-limited API
      syncd mock-api --images-port 8081 --recent-days 8 --retention-seconds 600 --image-error-rate 0.05
      SYNCD_API_URL=http://127.0.0.1:8080 SYNCD_API_KEY=demo-key syncd run-once
    """
    from datetime import UTC, datetime, timedelta

    from syncd.fakeapi.data import EPOCH, HORIZON, Dataset
    from syncd.fakeapi.images import ImageFaults, ImageServer
    from syncd.fakeapi.server import FakeApi, FakeServer, Faults, encoded_body

    image_faults = ImageFaults(
        latency=faults.pop("image_latency_ms") / 1000,
        error_5xx=faults.pop("image_error_rate"),
        gone=faults.pop("image_gone_fraction"),
        wrong_type=faults.pop("image_wrong_type_fraction"),
        redirect=faults.pop("image_redirect_fraction"),
        size=faults.pop("image_size"),
        rate_limit=faults.pop("image_rate_limit"),
    )
    images = None
    if images_port is not None:
        # Bound before the dataset is made: the artworks' URLs name its port.
        try:
            images = ImageServer(host, images_port, image_faults, seed=seed)
        except OSError as exc:
            port_at_fault = exc.errno in (errno.EADDRINUSE, errno.EACCES)
            hint = (
                "choose another --images-port (0 picks a free one)"
                if port_at_fault
                else "choose another --host"
            )
            raise ConfigError(
                f"mock-api --host {host} --images-port {images_port}: "
                f"{listen_reason(exc, host, images_port)}; {hint}"
            ) from None
    now = datetime.now(UTC)
    dataset = Dataset(
        count,
        seed,
        unknown_fraction=unknown_fraction,
        malformed_fraction=malformed_fraction,
        pending_fraction=pending_fraction,
        hostile_fraction=hostile_fraction,
        image_origin=images.url if images is not None else None,
        start=now - timedelta(days=recent_days) if recent_days > 0 else EPOCH,
        end=now if recent_days > 0 else HORIZON,
    )
    fault_config = Faults(
        rate_limit=faults["rate_limit"],
        error_5xx=faults["error_rate"],
        truncated=faults["truncate_rate"],
        non_json=faults["non_json_rate"],
        reset=faults["reset_rate"],
        slow=faults["slow_rate"],
        delay=faults["delay"],
        add_per_request=faults["add_per_request"],
        finish_after=faults["finish_after"],
        delete_oldest_per_request=faults["delete_oldest_per_request"],
        order=order,
        content_encoding=faults["content_encoding"],
        bom=faults["bom"],
        retry_after=faults["retry_after"],
        dribble=faults["dribble"],
        echo_key=faults["echo_key"],
        message_suffix=faults["message_suffix"],
        latency=faults["latency_ms"] / 1000,
        rate_limit_headers=faults["rate_limit_headers"],
        rate_limit_blocks=faults["rate_limit_blocks"],
        retention=retention_seconds,
        compressed=faults["compressed"],
        hidden=faults["hidden"],
        wrong_artwork=faults["wrong_artwork"],
        exact_id_case=faults["exact_id_case"],
        spent_quota_header=faults["spent_quota_header"],
    )
    if faults["compressed"]:
        try:
            encoded_body(b"[]", faults["compressed"])
        except ValueError as exc:
            raise ConfigError(f"mock-api --compressed {faults['compressed']!r}: {exc}") from None
    if faults["short_pages"]:
        try:
            span, by = faults["short_pages"].split(":")
            low, high = span.split("-")
            fault_config.short_from, fault_config.short_to, fault_config.short_by = (
                int(low),
                int(high),
                int(by),
            )
        except ValueError:
            raise ConfigError(
                f"mock-api --short-pages {faults['short_pages']!r}: expected FROM-TO:BY, e.g. 300-349:7"
            ) from None
    if poisons:
        dataset.poison(list(poisons), api_key)
    api = FakeApi(dataset, api_key=api_key, forbidden_keys=forbidden_key, faults=fault_config, seed=seed)
    try:
        server = FakeServer(api, host, port)
    except OSError as exc:
        if images is not None:
            images.server_close()
        port_at_fault = exc.errno in (errno.EADDRINUSE, errno.EACCES)
        hint = "choose another --port (0 picks a free one)" if port_at_fault else "choose another --host"
        raise ConfigError(
            f"mock-api --host {host} --port {port}: {listen_reason(exc, host, port)}; {hint}"
        ) from None
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    click.echo(
        f"fake Tengr.ai API on {server.url} with {count} artworks ({order}); key {api_key!r}", err=True
    )
    if images is not None:
        images.attach(api).start()
        click.echo(f"fake images on {images.url}", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if images is not None:
            images.stop()
