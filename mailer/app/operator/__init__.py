"""Operator actions (issue 23; docs/delivery.md, "Operator actions"): pause and resume a
campaign, a test send, suppress and resubscribe a customer, retry a campaign's failed
rows. The console and the CLI (`mailer pause`, `resume`, `retry`) both call these.

Each action writes its audit row (mailer.store.operator.audit: who, through what, what,
when) in the transaction of the change itself, and none edits a workspace file. ACTOR is
whoever acts (the console's user, the OS user on the command line), VIA `console` or `cli`;
asking for confirmation is the caller's (a form's second step, a prompt or --yes).
"""

from mailer.app.operator.actions import (
    CustomerAction,
    Paused,
    Resumed,
    Retry,
    check_campaign,
    clean_reason,
    pause_campaign,
    resubscribe_customer,
    resume_campaign,
    retry_failed,
    retry_plan,
    suppress_customer,
    test_send,
)

__all__ = ["CustomerAction", "Paused", "Resumed", "Retry", "check_campaign", "clean_reason",
           "pause_campaign", "resubscribe_customer", "resume_campaign", "retry_failed",
           "retry_plan", "suppress_customer", "test_send"]
