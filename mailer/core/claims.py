"""What a signed link says (mailer.mail.links makes and reads the tokens): a plain value,
so the tables that record what readers did need not know how links are signed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claims:
    purpose: str  # a key of PURPOSES
    customer: str  # the customer's store id
    campaign: str  # the campaign's file stem
    message: str  # the ledger row's id, or "preview"
    extra: str = ""  # a click's target URL, a mail's clicks: its version id; a rating's score
