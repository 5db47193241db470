"""Reasons the ledger writes from more than one place (kept here so the store and the
sender's pure state machine name them the same)."""

from __future__ import annotations

EXPIRED_REASON = "not sent by its expiry"
