"""An unsubscribe at the shop (issue 20 step 2: consent from the platforms) is the
customer's own opt-out: Shopify's `email_marketing_consent.state: unsubscribed` and
WooCommerce's consent meta `unsubscribed` make the customer `unsubscribed` through the
store's opt-out code (its consent history row, source the platform), which a later
`subscribed` from the shop does not lift and no campaign mails. Both databases, through
a real `mailer serve`."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Workspace
from tests.test_hooks import customer, hooks, sample, shopify, woo  # noqa: F401
from tests.test_serve import Service


def consent_of(body: dict[str, Any], state: str, at: str) -> bytes:
    body = dict(body, updated_at=at)
    body["email_marketing_consent"] = {"state": state, "opt_in_level": "single_opt_in",
                                       "consent_updated_at": at}
    return json.dumps(body).encode()


def history(db: Workspace, email: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in db.query(
        "SELECT h.state, h.source, h.reason FROM consent_history h JOIN customers c "
        "ON c.id = h.customer_id WHERE c.email = :e ORDER BY h.id", e=email)]


def test_shopify_unsubscribed_is_an_opt_out(db: Workspace, hooks: Service) -> None:  # noqa: F811
    created = json.loads(sample("shopify_customers_create.json"))
    assert shopify(hooks, "customers/create", json.dumps(created).encode(), "c-1")[0] == 200
    assert customer(db, "ana.lima@example.com")["consent"] == "subscribed"
    left = consent_of(created, "unsubscribed", "2026-11-24T10:00:00-05:00")
    assert shopify(hooks, "customers/update", left, "c-2") == (200, "stored\n")
    ana = customer(db, "ana.lima@example.com")
    assert (ana["consent"], ana["consent_source"]) == ("unsubscribed", "shopify")
    assert history(db, "ana.lima@example.com") == [
        ("subscribed", "shopify", None), ("unsubscribed", "shopify", "unsubscribed at the shop")]
    # a later "subscribed" from the shop does not lift the opt-out, an older update
    # ("not_subscribed") changes nothing either
    again = consent_of(created, "subscribed", "2026-11-25T10:00:00-05:00")
    assert shopify(hooks, "customers/update", again, "c-3")[0] == 200
    older = consent_of(created, "not_subscribed", "2026-11-23T10:00:00-05:00")
    assert shopify(hooks, "customers/update", older, "c-4")[0] == 200
    assert customer(db, "ana.lima@example.com")["consent"] == "unsubscribed"
    assert len(history(db, "ana.lima@example.com")) == 2
    # a customer the store first hears of as unsubscribed is one
    new = dict(created, id=7392650400001, email="new.one@example.com")
    assert shopify(hooks, "customers/create",
                   consent_of(new, "unsubscribed", "2026-11-24T10:00:00-05:00"), "c-5")[0] == 200
    assert customer(db, "new.one@example.com")["consent"] == "unsubscribed"


def test_an_older_unsubscribe_does_not_overwrite_a_newer_subscribe(
        db: Workspace, hooks: Service) -> None:  # noqa: F811
    created = json.loads(sample("shopify_customers_create.json"))
    assert shopify(hooks, "customers/create", json.dumps(created).encode(), "c-1")[0] == 200
    newer = consent_of(created, "subscribed", "2026-11-25T10:00:00-05:00")
    assert shopify(hooks, "customers/update", newer, "c-2")[0] == 200
    late = consent_of(created, "unsubscribed", "2026-11-24T10:00:00-05:00")
    assert shopify(hooks, "customers/update", late, "c-3")[0] == 200
    assert customer(db, "ana.lima@example.com")["consent"] == "subscribed"


def test_woocommerce_consent_meta_unsubscribed(db: Workspace, hooks: Service) -> None:  # noqa: F811
    assert woo(hooks, "customer.created", sample("woocommerce_customer_created.json"),
               "w-1")[0] == 200
    assert customer(db, "joao.silva@example.com")["consent"] == "subscribed"
    body = json.loads(sample("woocommerce_customer_updated.json"))
    body["meta_data"] = [{"id": 501, "key": "mailer_subscribed", "value": "unsubscribed"}]
    assert woo(hooks, "customer.updated", json.dumps(body).encode(), "w-2")[0] == 200
    joao = customer(db, "joao.silva@example.com")
    assert (joao["consent"], joao["consent_source"]) == ("unsubscribed", "woocommerce")
