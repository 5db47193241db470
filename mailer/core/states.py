"""The ledger's and the customer's states, one definition each (DESIGN §3, §6), and the
reasons written from more than one place. StrEnums: each member is its text, so it is
stored, compared and printed as the plain string the contract names."""

from __future__ import annotations

from enum import StrEnum


class DeliveryState(StrEnum):
    """A ledger row's status; the order is the order reports list them in."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"
    EXPIRED = "expired"


class Consent(StrEnum):
    """A customer's consent to marketing mail."""

    SUBSCRIBED = "subscribed"
    NOT_SUBSCRIBED = "not_subscribed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    PENDING = "pending"  # opted in, waiting to confirm (consent.double_opt_in)


S = DeliveryState
DUE = (S.QUEUED, S.DEFERRED)  # a sender may lease these when their time has come
# planned mails that count toward frequency caps (and cooldowns): all but failed, skipped, expired
COUNT_TOWARD_CAPS = (S.QUEUED, S.SENDING, S.DEFERRED, S.SENT, S.UNKNOWN)
WENT_OUT = (S.SENT, S.UNKNOWN)  # a bounce or a reminder can only be about these
OUTCOMES = (S.SENT, S.DEFERRED, S.FAILED, S.UNKNOWN, S.SKIPPED, S.EXPIRED)  # of one send
OPTED_OUT = (Consent.UNSUBSCRIBED, Consent.BOUNCED, Consent.COMPLAINED)

EXPIRED_REASON = "not sent by its expiry"

# Why a planned mail is not sent, decided both when planning and right before the wire.
ORDERED = "ordered"  # an abandoned checkout's customer paid for an order since
OUT_OF_STOCK = "out_of_stock"  # a back-in-stock mail's product sold out again
PAUSED_CAMPAIGN = "paused_campaign"  # an operator paused the campaign (`mailer pause`)
