""""View in your browser": a sent mail's HTML part as that reader got it.

A `/b/TOKEN` link names the ledger row its mail came from. Only a row whose mail
went out (`sent`) is shown; it is rendered the way the sender rendered it — from the
row's campaign version, with the row's subject variant, intro and coupon, the reader's
profile and order statistics, and `now` set to the row's `sent_at` — and its links are
made into the same signed click links. The open pixel is left out: the page itself
counts as the open (the service records it), and the pixel would count it twice.

Two steps, so the service can run each where it belongs: `find` reads the database
(and compiles the version the first time it is asked for), `render` is CPU only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailer.config.settings import Settings
from mailer.core.claims import Claims
from mailer.core.errors import MailerError
from mailer.delivery.worker import render_error
from mailer.mail.context import load_checkouts, load_customers, load_products, load_stats
from mailer.mail.tracking import tracked
from mailer.mail.version import Version, compose_row, from_definition
from mailer.store.coupons import coupons_of_rows
from mailer.store.customers import Profile
from mailer.store.db import DatabaseError, Engine
from mailer.store.ledger import Row, row_by_id
from mailer.store.versions import stored_version, version_definition

SHOWN = ("sent",)  # an `unknown` row may never have reached its reader


class NotRenderable(MailerError):
    """A sent mail that can no longer be rendered (the message: `render_error: …`)."""


@dataclass(frozen=True)
class Reading:
    """Everything one sent mail is rendered from."""

    row: Row
    sent_at: datetime  # aware: the render's `now`
    person: Profile
    stats: dict[str, Any] | None
    coupon: tuple[str, datetime] | None
    version: Version
    settings: Settings
    checkout: dict[str, Any] | None = None  # an abandoned checkout's mail's
    product: dict[str, Any] | None = None  # a back-in-stock mail's

    @property
    def tracks_opens(self) -> bool:
        """Whether the mail carried an open pixel: with `opens: false` a view is not one."""
        return self.settings.tracking.opens


class BrowserView:
    """Sent mails, rendered again on request. One per service: it keeps the last
    VERSIONS compiled campaign versions (a version never changes once stored)."""

    VERSIONS = 32

    def __init__(self, key: str) -> None:
        self.key = key  # the service's current key: links signed as a sender would now
        self._versions: OrderedDict[int, tuple[Version, Settings]] = OrderedDict()
        self._lock = threading.Lock()  # find() runs in several threads at once
        self._links: OrderedDict[int, tuple[str, ...] | None] = OrderedDict()

    def held_links(self, engine: Engine, version_id: int) -> tuple[str, ...] | None:
        """The links campaign version VERSION_ID holds, as its definition stores them
        (what a `/c/<click token>/<n>` link numbers); None when there is no such
        version. Read from the definition, never compiled; the last 1,000 kept."""
        with self._lock:
            if version_id in self._links:
                self._links.move_to_end(version_id)
                return self._links[version_id]
        with engine.connect() as conn:
            found = stored_version(conn, version_id)
        links = None if found is None else tuple(str(url) for url in found[1].get("links", ()))
        with self._lock:
            self._links[version_id] = links
            while len(self._links) > 1000:
                self._links.popitem(last=False)
        return links

    def find(self, engine: Engine, claims: Claims) -> Reading | None:
        """The sent mail a browser link's CLAIMS name, or None: a row that does not
        exist (any more), was never sent, or is not that customer's mail of that
        campaign. NotRenderable when its version cannot be read."""
        if not claims.message.isdigit() or len(claims.message) > 18:
            return None  # a preview's link ("preview"), or no row id at all
        with engine.connect() as conn:
            found = row_by_id(conn, int(claims.message))
            if found is None:
                return None
            row, status, sent_at = found
            if status not in SHOWN or sent_at is None or row.campaign != claims.campaign:
                return None
            person = load_customers(conn, [row.customer_id]).get(row.customer_id)
            if person is None or person.store_id != claims.customer:
                return None
        # one connection at a time: the service's threads never wait for the pool
        version, settings = self._version(engine, row.campaign_version_id)
        moment = _aware(sent_at)
        with engine.connect() as conn:
            stats = load_stats(conn, [row.customer_id], now=moment,
                               currency=settings.store.currency).get(row.customer_id)
            coupon = coupons_of_rows(conn, [row.id]).get(row.id)
            checkout = load_checkouts(conn, [(row.id, row.customer_id, row.occurrence)]
                                      ).get(row.id)
            product = load_products(conn, [(row.id, row.occurrence)]).get(row.id)
        return Reading(row, moment, person, stats, coupon, version, settings, checkout,
                       product)

    def _version(self, engine: Engine, version_id: int) -> tuple[Version, Settings]:
        with self._lock:
            if version_id in self._versions:
                self._versions.move_to_end(version_id)
                return self._versions[version_id]
        try:
            compiled = from_definition(version_definition(engine, version_id))
        except DatabaseError:
            raise
        except Exception as err:  # a version this release cannot read
            raise NotRenderable(render_error(err)) from None
        with self._lock:  # two threads may compile one version at once: either will do
            self._versions[version_id] = compiled
            while len(self._versions) > self.VERSIONS:
                self._versions.popitem(last=False)
        return compiled

    def render(self, reading: Reading) -> str:
        """The mail's HTML part, its links tracked as the sender tracked them, without
        the open pixel. NotRenderable when its templates no longer render (the data
        they read changed, say)."""
        row, settings = reading.row, reading.settings
        try:
            mail, _ = compose_row(reading.version, row, reading.person, reading.stats,
                                  settings=settings, coupon=reading.coupon,
                                  now=reading.sent_at, key=self.key,
                                  checkout=reading.checkout, product=reading.product)
        except Exception as err:  # the sender fails a row for any of these too
            raise NotRenderable(render_error(err)) from None
        tracking = settings.tracking
        return tracked(mail.html, base_url=tracking.base_url, customer=reading.person.store_id,
                       campaign=row.campaign, message=str(row.id), key=self.key,
                       clicks=tracking.clicks, opens=False, held=reading.version.held,
                       version=row.campaign_version_id)


def _aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back naive: the ledger writes them in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
