"""Coupons and referral codes: the unique codes planning gives to mails and customers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update

from mailer.store.db import IDS, Connection, insert_returning
from mailer.store.models import Coupon, Customer

COUPONS = cast(Table, Coupon.__table__)

_COUPON_COLUMNS = {"code": "text", "customer_id": "integer", "campaign": "text",
                   "delivery_id": "integer", "value": "text", "expires_at": "timestamp"}


def insert_coupons(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert coupons, skipping one whose code is taken; returns the ledger row ids
    whose coupon was written."""
    given = insert_returning(conn, "coupons", _COUPON_COLUMNS, rows,
                             conflict="code", returning="delivery_id")
    return [delivery_id for (delivery_id,) in given]


def without_referral_code(conn: Connection, ids: list[int]) -> list[int]:
    """The customers among IDS who have no referral code yet."""
    return [row[0] for row in conn.execute(
        select(Customer.id).where(Customer.id.in_(ids), Customer.referral_code.is_(None)))]


def taken_referral_codes(conn: Connection, codes: list[str]) -> set[str]:
    """The codes among CODES that a customer already has."""
    return {code for code in conn.execute(select(Customer.referral_code)
                                          .where(Customer.referral_code.in_(codes))).scalars()
            if code is not None}


def give_referral_code(conn: Connection, customer_id: int, code: str) -> None:
    """CODE becomes the customer's referral code, unless they have one already."""
    conn.execute(update(Customer).where(Customer.id == customer_id,
                                        Customer.referral_code.is_(None))
                 .values(referral_code=code))


# built once (a mail batch's read): the ids bound per call
_OF_ROWS = select(Coupon.delivery_id, Coupon.code, Coupon.expires_at).where(
    Coupon.delivery_id.in_(IDS))


def coupons_of_rows(conn: Connection, delivery_ids: Sequence[int]
                    ) -> dict[int, tuple[str, datetime]]:
    """Ledger row id -> (code, expiry) of the coupon made for it."""
    return {int(row[0] or 0): (row[1], row[2])
            for row in conn.execute(_OF_ROWS, {"ids": list(delivery_ids)})}
