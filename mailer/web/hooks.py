"""Webhooks under /hooks/ (issue 20, docs/events.md): Shopify, WooCommerce and mailer's
own events.

Each request is checked in this order, and the first failure answers:
  1. the body: at most HOOK_BODY bytes (413);
  2. WooCommerce's unsigned ping when a webhook is created (`webhook_id=N`): 200, no
     change (a 401 would disable the webhook);
  3. the platform's signature over the raw body, in constant time (401);
  4. the topic, the delivery id and the JSON (400, with the reason);
  5. the write (mailer.store.feeds.apply.take), committed before the 200; a replay of a
     delivery id is 200 and changes nothing; a database that does not answer within
     HOOK_WAIT seconds is 503 (the platforms retry; Shopify waits 5 s for an answer).

`check` is the pure part, shared with `mailer hooks replay` (`replay`), which feeds saved
requests through the same steps.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailer.store.db import Engine
from mailer.store.feeds import shapes
from mailer.store.feeds.apply import Taken, take
from mailer.store.records import Context

HOOK_BODY = 5 * 1024 * 1024  # a Shopify order with hundreds of lines is well under this
HOOK_WAIT = 4.0  # s for the database: the answer must reach Shopify within 5 s
_PING = re.compile(rb"webhook_id=\d+")


@dataclass(frozen=True)
class Answer:
    """A request's final answer before any write: status and the plain-text reason."""

    status: int
    reason: str


@dataclass(frozen=True)
class Delivery:
    """A checked request: the platform's delivery id and what it says about the store."""

    delivery_id: str
    change: shapes.Change


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _base64_hmac(secret: str, body: bytes, given: str | None) -> bool:
    if not given:
        return False
    try:
        signature = base64.b64decode(given.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return hmac.compare_digest(signature, expected)


def signed(source: str, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """Whether BODY carries SOURCE's signature made with SECRET."""
    if source == "shopify":
        return _base64_hmac(secret, body, _header(headers, "X-Shopify-Hmac-Sha256"))
    if source == "woocommerce":
        return _base64_hmac(secret, body, _header(headers, "X-WC-Webhook-Signature"))
    given = (_header(headers, "X-Mailer-Signature") or "").strip()
    if not given.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given[len("sha256="):].lower().encode(), expected.encode())


def check(source: str, headers: Mapping[str, str], body: bytes,
          secrets: Mapping[str, str]) -> Answer | Delivery:
    """A request to /hooks/SOURCE checked up to the write: its answer, or the delivery."""
    if source not in shapes.SOURCES:
        return Answer(404, f"no webhooks for {source!r}: {', '.join(shapes.SOURCES)}")
    if len(body) > HOOK_BODY:
        return Answer(413, f"the body is larger than {HOOK_BODY // (1024 * 1024)} MB")
    if source == "woocommerce" and _PING.fullmatch(body.strip()) and \
            _header(headers, "X-WC-Webhook-Signature") is None:
        return Answer(200, "pong: nothing changed")
    secret = secrets.get(source)
    if secret is None:
        return Answer(401, f"no secret is set for {source} webhooks "
                           f"({_SECRET_NAMES[source]})")
    if not signed(source, headers, body, secret):
        return Answer(401, "the signature does not match the body")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return Answer(400, f"the body is not JSON: {err}")
    try:
        if source == "custom":
            event_id, change = shapes.custom(payload)
            return Delivery(event_id, change)
        topic_header, id_header = _NAMES[source]
        topic = _header(headers, topic_header)
        delivery_id = _header(headers, id_header)
        if not topic:
            return Answer(400, f"{topic_header} is missing")
        if not delivery_id:
            return Answer(400, f"{id_header} is missing")
        mapped = shapes.shopify if source == "shopify" else shapes.woocommerce
        return Delivery(delivery_id.strip(), mapped(topic.strip(), payload))
    except shapes.Unusable as err:
        return Answer(400, str(err))


_NAMES = {"shopify": ("X-Shopify-Topic", "X-Shopify-Webhook-Id"),
          "woocommerce": ("X-WC-Webhook-Topic", "X-WC-Webhook-Delivery-ID")}
_SECRET_NAMES = {"shopify": "MAILER_SHOPIFY_SECRET",
                 "woocommerce": "MAILER_WOOCOMMERCE_SECRET", "custom": "MAILER_EVENTS_SECRET"}


def write(engine: Engine, source: str, delivery: Delivery, ctx: Context,
          now: datetime) -> Answer:
    """The checked delivery written (committed on return), as the answer says it."""
    try:
        taken: Taken = take(engine, source, delivery.delivery_id, delivery.change, ctx, now)
    except shapes.Unusable as err:
        return Answer(400, str(err))
    text = taken.outcome + (f": {taken.detail}" if taken.detail else "")
    return Answer(200, text)


# --- mailer hooks replay --------------------------------------------------------------


@dataclass(frozen=True)
class Replayed:
    line: int
    source: str
    answer: Answer


def replay(engine: Engine, lines: Iterator[bytes], secrets: Mapping[str, str],
           ctx: Context, now: Callable[[], datetime]) -> Iterator[Replayed]:
    """Saved requests, one JSON line each ({"source", "headers", "body_base64"}), through
    the same checks and write as /hooks/SOURCE; each line's answer."""
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            saved: Any = json.loads(raw)
            if not isinstance(saved, dict):
                raise ValueError("expected an object")
            source = str(saved["source"])
            headers = saved.get("headers") or {}
            if not isinstance(headers, dict):
                raise ValueError("headers: expected an object")
            body = base64.b64decode(str(saved["body_base64"]), validate=True)
        except KeyError as missing:
            yield Replayed(number, "?", Answer(400, f"{missing.args[0]} is missing"))
            continue
        except (ValueError, binascii.Error) as err:
            yield Replayed(number, "?", Answer(400, f"not a saved request: {err}"))
            continue
        verdict = check(source, {str(k): str(v) for k, v in headers.items()}, body, secrets)
        if isinstance(verdict, Delivery):
            verdict = write(engine, source, verdict, ctx, now())
        yield Replayed(number, source, verdict)
