"""The audit of operator actions (issue 23; docs/delivery.md, "Operator actions"): every
statement on `operator_audit`, for the console's actions and the CLI's alike. Each
action writes its row with `record`, in the transaction of the change it records, so a
change is never without its row nor a row without its change. Rows are only added."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from mailer.store.db import Connection
from mailer.store.models import AuditEntry

# What an audit row's `action` says.
PAUSE_CAMPAIGN = "pause_campaign"
RESUME_CAMPAIGN = "resume_campaign"
TEST_SEND = "test_send"
SUPPRESS_CUSTOMER = "suppress_customer"
RESUBSCRIBE_CUSTOMER = "resubscribe_customer"
RETRY_FAILED = "retry_failed"
ACTIONS = (PAUSE_CAMPAIGN, RESUME_CAMPAIGN, TEST_SEND, SUPPRESS_CUSTOMER,
           RESUBSCRIBE_CUSTOMER, RETRY_FAILED)


@dataclass(frozen=True)
class Entry:
    """One audit row as read back."""

    id: int
    at: datetime
    actor: str
    via: str
    action: str
    target: str
    reason: str | None
    detail: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        from mailer.core.clock import iso_z

        return {"id": self.id, "at": iso_z(self.at), "actor": self.actor, "via": self.via,
                "action": self.action, "target": self.target, "reason": self.reason,
                "detail": self.detail}


def record(conn: Connection, *, at: datetime, actor: str, via: str, action: str,
           target: str, reason: str | None = None,
           detail: dict[str, Any] | None = None) -> int:
    """Add one audit row; its id."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    return int(conn.execute(insert(AuditEntry).values(
        at=at, actor=actor, via=via, action=action, target=target, reason=reason,
        detail=detail).returning(AuditEntry.id)).scalar_one())


_COLUMNS = (AuditEntry.id, AuditEntry.at, AuditEntry.actor, AuditEntry.via, AuditEntry.action,
            AuditEntry.target, AuditEntry.reason, AuditEntry.detail)


def entries(conn: Connection, *, target: str | None = None, limit: int = 100) -> list[Entry]:
    """The newest LIMIT audit rows (of TARGET alone, when given), newest first."""
    query = select(*_COLUMNS).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if target is not None:
        query = query.where(AuditEntry.target == target)
    return [Entry(*row) for row in conn.execute(query)]
