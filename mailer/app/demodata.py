"""A believable synthetic store, reproducible for the same size, seed and `now`.

It writes the import formats (customers.csv, orders.csv), so the demo data goes
through the one import path and doubles as an example of the files a store
exports: names in several scripts, time zones on every continent (both sides of
the date line), birthdays including 29 February, refunds and cancellations, a few
customers paying in another currency, some customers not subscribed, referrals,
tags and custom attributes. Each customer's orders follow a purchase lifecycle
(BG/NBD's: a rate of their own, a chance to drop out after each repeat order) and
a spend level of their own (Gamma-Gamma's), so `mailer predict` finds a real
pattern; baskets lean on a favourite category and products bought together, so
recommendations do too. Beside the import, the ledger gets one long-silent reader
(policy.sunset): the last eight monthly newsletters sent to a subscriber quiet for
300 days, none clicked, so the demo week has someone to send the re-permission mail.
"""

from __future__ import annotations

import csv
import random
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from mailer.config.settings import Settings
from mailer.core.clock import iso_z
from mailer.core.errors import MailerError, UserError
from mailer.core.money import format_minor
from mailer.store.db import Engine

CUSTOMER_HEADER = ["id", "email", "first_name", "last_name", "birth_date", "timezone", "locale",
                   "country", "city", "signed_up_at", "subscribed", "tags", "referred_by",
                   "loyalty_tier", "renewal_date"]
ORDER_HEADER = ["order_id", "customer_id", "placed_at", "status", "currency", "total", "sku",
                "product", "category", "quantity", "price", "coupon"]

# (first names, last names): each name with the romanised form its address uses.
_LATIN = ([("Anna", "anna"), ("Lukas", "lukas"), ("Zoë", "zoe"), ("José", "jose"),
           ("Łukasz", "lukasz"), ("Søren", "soren"), ("Emma", "emma"), ("Noah", "noah"),
           ("Chloé", "chloe"), ("Mateo", "mateo"), ("Olivia", "olivia"), ("Jonas", "jonas"),
           ("Amélie", "amelie"), ("Liam", "liam"), ("Sofía", "sofia"), ("Kemal", "kemal")],
          [("Müller", "mueller"), ("Smith", "smith"), ("García", "garcia"), ("Kowalski",
           "kowalski"), ("Jensen", "jensen"), ("Dubois", "dubois"), ("Rossi", "rossi"),
           ("Novák", "novak"), ("O'Brien", "obrien"), ("Silva", "silva"), ("Yılmaz", "yilmaz"),
           ("van Dijk", "vandijk"), ("Nguyen", "nguyen"), ("Schmidt", "schmidt")])
_CYRILLIC = ([("Дмитрий", "dmitry"), ("Анна", "anna"), ("Ольга", "olga"), ("Иван", "ivan"),
              ("Олена", "olena")],
             [("Иванов", "ivanov"), ("Смирнова", "smirnova"), ("Шевченко", "shevchenko")])
_GREEK = ([("Γιώργος", "giorgos"), ("Ελένη", "eleni"), ("Νίκος", "nikos")],
          [("Παπαδόπουλος", "papadopoulos"), ("Οικονόμου", "oikonomou")])
_JAPANESE = ([("翔太", "shota"), ("さくら", "sakura"), ("陽菜", "hina"), ("蓮", "ren")],
             [("佐藤", "sato"), ("鈴木", "suzuki"), ("高橋", "takahashi")])
_CHINESE = ([("伟", "wei"), ("芳", "fang"), ("静", "jing"), ("磊", "lei")],
            [("王", "wang"), ("李", "li"), ("张", "zhang")])
_KOREAN = ([("민준", "minjun"), ("서연", "seoyeon"), ("지호", "jiho")],
           [("김", "kim"), ("이", "lee"), ("박", "park")])
_ARABIC = ([("محمد", "mohammed"), ("فاطمة", "fatima"), ("ليلى", "layla"), ("عمر", "omar")],
           [("الحسن", "alhassan"), ("المنصوري", "almansouri")])
_HINDI = ([("अनन्या", "ananya"), ("राहुल", "rahul"), ("प्रिया", "priya")],
          [("शर्मा", "sharma"), ("पटेल", "patel")])


@dataclass(frozen=True)
class _Place:
    zone: str
    country: str
    city: str
    locale: str
    names: tuple[list[tuple[str, str]], list[tuple[str, str]]]
    weight: int


_PLACES = (
    _Place("Europe/Berlin", "DE", "Berlin", "de-DE", _LATIN, 30),
    _Place("Europe/Berlin", "DE", "München", "de-DE", _LATIN, 10),
    _Place("Europe/Paris", "FR", "Lyon", "fr-FR", _LATIN, 8),
    _Place("Europe/Madrid", "ES", "Sevilla", "es-ES", _LATIN, 5),
    _Place("Europe/Warsaw", "PL", "Kraków", "pl-PL", _LATIN, 4),
    _Place("Europe/Copenhagen", "DK", "Aarhus", "da-DK", _LATIN, 3),
    _Place("Europe/Athens", "GR", "Αθήνα", "el-GR", _GREEK, 3),
    _Place("Europe/Kyiv", "UA", "Київ", "uk-UA", _CYRILLIC, 3),
    _Place("Europe/Istanbul", "TR", "İstanbul", "tr-TR", _LATIN, 2),
    _Place("America/New_York", "US", "New York", "en-US", _LATIN, 8),
    _Place("America/Los_Angeles", "US", "Los Angeles", "en-US", _LATIN, 4),
    _Place("America/Sao_Paulo", "BR", "São Paulo", "pt-BR", _LATIN, 3),
    _Place("America/Mexico_City", "MX", "Ciudad de México", "es-MX", _LATIN, 2),
    _Place("America/Toronto", "CA", "Toronto", "en-CA", _LATIN, 2),
    _Place("Asia/Tokyo", "JP", "東京", "ja-JP", _JAPANESE, 3),
    _Place("Asia/Shanghai", "CN", "上海", "zh-CN", _CHINESE, 2),
    _Place("Asia/Seoul", "KR", "서울", "ko-KR", _KOREAN, 2),
    _Place("Asia/Kolkata", "IN", "मुंबई", "hi-IN", _HINDI, 2),
    _Place("Asia/Dubai", "AE", "دبي", "ar-AE", _ARABIC, 2),
    _Place("Africa/Cairo", "EG", "القاهرة", "ar-EG", _ARABIC, 1),
    _Place("Africa/Lagos", "NG", "Lagos", "en-NG", _LATIN, 1),
    _Place("Africa/Johannesburg", "ZA", "Cape Town", "en-ZA", _LATIN, 1),
    _Place("Australia/Sydney", "AU", "Sydney", "en-AU", _LATIN, 2),
    _Place("Pacific/Auckland", "NZ", "Auckland", "en-NZ", _LATIN, 1),
    _Place("Pacific/Kiritimati", "KI", "Kiritimati", "en-KI", _LATIN, 1),  # UTC+14
    _Place("Pacific/Pago_Pago", "AS", "Pago Pago", "en-AS", _LATIN, 1),  # UTC-11
)
_PLACE_WEIGHTS = [p.weight for p in _PLACES]

# category -> (sku prefix, [(product, price in minor units, popularity)]); a product's sku is
# its prefix and its place in the list (SH-001 ...), so new products go at the end.
_CATALOG = {
    "shoes": ("SH", [("Trail runner", 8900, 3), ("City sneaker", 6990, 4),
                     ("Wool slipper", 3450, 2), ("Merino socks", 1490, 5),
                     ("Shoe care kit", 1990, 2)]),
    "outdoor": ("OD", [("Rain jacket", 12900, 2), ("Daypack 20 l", 5990, 3),
                       ("Camping mug", 1290, 4), ("Headlamp", 2990, 3)]),
    "kitchen": ("KI", [("Cast iron pan", 4990, 4), ("Chef's knife", 7900, 2),
                       ("Linen apron", 2450, 2), ("Cutting board", 3290, 3)]),
    "coffee": ("CO", [("Espresso beans 1 kg", 2390, 8), ("Pour-over kettle", 4490, 2),
                      ("Filter papers", 490, 4), ("Ceramic dripper", 2190, 2)]),
    "books": ("BO", [("Field guide to birds", 2400, 2), ("Sourdough handbook", 1999, 3)]),
    "garden": ("GA", [("Pruning shears", 2890, 2), ("Seed collection", 990, 4),
                      ("Watering can", 2490, 2)]),
    "beauty": ("BE", [("Hand cream", 1250, 4), ("Beard oil", 1690, 2), ("Lip balm", 590, 3)]),
    "toys": ("TO", [("Wooden train", 3990, 2), ("Puzzle 1000", 1890, 3)]),
}
# Products bought together (a kettle needs filter papers): after the first, the second joins
# the basket with probability _BUNDLE_P, so item-to-item co-purchase has something to find.
_BUNDLES = {"Pour-over kettle": "Filter papers", "Ceramic dripper": "Filter papers",
            "Trail runner": "Merino socks", "City sneaker": "Shoe care kit",
            "Daypack 20 l": "Camping mug", "Rain jacket": "Headlamp",
            "Cast iron pan": "Sourdough handbook", "Chef's knife": "Cutting board",
            "Wooden train": "Puzzle 1000", "Pruning shears": "Seed collection"}
_BUNDLE_P = 0.35
# Each customer favours one category (weights: how many do) and its companion a little.
_FAVOURITE_WEIGHTS = {"coffee": 4, "shoes": 3, "outdoor": 2, "kitchen": 3, "books": 1,
                      "garden": 1, "beauty": 1, "toys": 1}
_COMPANION = {"coffee": "kitchen", "kitchen": "coffee", "shoes": "outdoor", "outdoor": "shoes",
              "books": "garden", "garden": "books", "beauty": "toys", "toys": "beauty"}
_CATEGORIES = sorted(_CATALOG)
_SKUS = {product: (f"{prefix}-{number + 1:03d}", product, category, price)
         for category, (prefix, products) in _CATALOG.items()
         for number, (product, price, _) in enumerate(products)}
_DOMAINS = ["example.com", "example.org", "example.net", "shop.example", "mail.example.com"]
_TAGS = ["newsletter-2025", "wholesale", "vip", "gift-buyer", "app-user", "test-account"]

# The purchase lifecycle is BG/NBD's own story (Fader, Hardie & Lee 2005), in days, so
# `mailer predict` has something true to find: a customer buys at rate λ ~ Gamma(shape R,
# rate ALPHA) while alive and drops out after each repeat purchase with probability
# p ~ Beta(A, B). Spend is Gamma-Gamma's: a customer's orders are worth Gamma(P, ν) each,
# ν ~ Gamma(Q, rate GAMMA) (minor units). Values are picked to look like a small web shop:
# λ averages one order in 50 days (shape 0.6: many buy far less often, a few far more), a
# quarter of buyers drop out after each repeat order on average, an order is about 70.
_GROWTH = 1.5  # signup age is 4 years × u^_GROWTH: more customers every year
_NEVER_BUY = 0.28  # signed up, never ordered
_RATE_R, _RATE_ALPHA = 0.6, 30.0
_DROP_A, _DROP_B = 1.3, 4.0
_SPEND_P, _SPEND_Q, _SPEND_GAMMA = 5.0, 4.0, 4500.0
_FIRST_ORDER_DAYS = 20.0  # mean wait from signup to the first order of those who wait
_REFUNDED, _CANCELLED = 0.05, 0.03  # per paid order, an extra order that is not a purchase
_MAX_LINES = 5
DAY = 86_400


@dataclass(frozen=True)
class _Buyer:
    store_id: str
    signed_up: datetime
    currency: str
    favourite: str
    nu: float  # Gamma-Gamma's ν: this customer's orders are worth Gamma(P, ν) each


def generate(customers_out: TextIO, orders_out: TextIO, *, customers: int, seed: int,
             now: datetime, currency: str,
             silent: list[str] | None = None) -> tuple[int, int]:
    """Write N customers and their orders as CSV; returns (customers, order lines).
    SILENT gets the store ids of the subscribed Berlin customers (no test account) whose
    sign-up and last paid order are over SILENT_FOR old: readers who could have been
    sent mails all that time without a sign of life (fill_store gives one that history).
    Picking them draws nothing from the generator, so the store stays as it was."""
    rng = random.Random(f"{seed}:{customers}:{iso_z(now)}")
    # its own draws, so adding renewal dates left every other value as it was
    renewals = random.Random(f"renewal:{seed}:{customers}:{iso_z(now)}")
    people = csv.writer(customers_out, lineterminator="\n")
    sales = csv.writer(orders_out, lineterminator="\n")
    people.writerow(CUSTOMER_HEADER)
    sales.writerow(ORDER_HEADER)
    order_number, lines = 0, 0
    favourites, favourite_weights = list(_FAVOURITE_WEIGHTS), list(_FAVOURITE_WEIGHTS.values())
    for index in range(1, customers + 1):
        store_id = f"C{index:06d}"
        place = rng.choices(_PLACES, weights=_PLACE_WEIGHTS)[0]
        first, first_ascii = rng.choice(place.names[0])
        last, last_ascii = rng.choice(place.names[1])
        # The shop grows: of four years of signups, the recent ones are the most.
        signed_up = now - timedelta(seconds=1 + int(4 * 365 * DAY * rng.random() ** _GROWTH))
        local = f"{first_ascii}.{last_ascii}{index}"
        if rng.random() < 0.05:
            local = local.capitalize()  # addresses arrive in mixed case
        row = [
            store_id,
            f"{local}@{rng.choice(_DOMAINS)}",
            "" if rng.random() < 0.03 else first,
            "" if rng.random() < 0.05 else last,
            _birth_date(rng, now),
            "" if rng.random() < 0.1 else place.zone,
            place.locale,
            place.country,
            place.city,
            iso_z(signed_up),
            "false" if rng.random() < 0.12 else "true",
            ";".join(sorted(rng.sample(_TAGS[:-1], k=rng.choice((0, 0, 0, 1, 1, 2))))
                     + (["test-account"] if rng.random() < 0.01 else [])),
            f"C{rng.randrange(1, index):06d}" if index > 1 and rng.random() < 0.08 else "",
            rng.choice(("bronze", "bronze", "silver", "gold")),
            _renewal_date(renewals, now),
        ]
        people.writerow(row)
        # A few American customers pay in dollars, always: the models read the store
        # currency only, so their whole history is left out rather than thinned.
        paying = ("USD" if place.country == "US" and currency != "USD" and rng.random() < 0.15
                  else currency)
        buyer = _Buyer(store_id, signed_up, paying,
                       rng.choices(favourites, weights=favourite_weights)[0],
                       rng.gammavariate(_SPEND_Q, 1.0 / _SPEND_GAMMA))
        history = _orders(rng, signed_up, now)
        for placed, status in history:
            order_number += 1
            lines += _write_order(sales, rng, f"O{order_number:07d}", buyer, placed, status)
        quiet_since = max([signed_up, *(placed for placed, status in history
                                        if status == "paid")])
        if silent is not None and row[5] == "Europe/Berlin" and row[10] == "true" \
                and "test-account" not in row[11] and quiet_since < now - SILENT_FOR:
            silent.append(store_id)
    return customers, lines


def _orders(rng: random.Random, signed_up: datetime, now: datetime) -> list[tuple[datetime, str]]:
    """One customer's orders (placed, status) before NOW, in time order: the paid ones
    follow the BG/NBD lifecycle, and about one in twelve has a refunded or cancelled order
    shortly before it (a first try), which is not a purchase and changes nothing after."""
    if rng.random() < _NEVER_BUY:
        return []
    rate = rng.gammavariate(_RATE_R, 1.0 / _RATE_ALPHA)  # purchases per day while alive
    dropout = rng.betavariate(_DROP_A, _DROP_B)
    horizon = (now - signed_up).total_seconds() / DAY
    # Half buy while signing up, the others come back for a first order later.
    t = rng.random() * 0.02 if rng.random() < 0.5 else rng.expovariate(1 / _FIRST_ORDER_DAYS)
    paid: list[float] = []
    while t < horizon:
        paid.append(t)
        if len(paid) > 1 and rng.random() < dropout:
            break  # gone after this repeat purchase (BG/NBD never drops at the first)
        if rate <= 0.0:
            break
        t += rng.expovariate(rate)
    placed: list[tuple[float, str]] = []
    for moment in paid:
        roll = rng.random()
        if roll < _REFUNDED + _CANCELLED:
            earlier = max(moment - rng.uniform(1 / 24, 10.0), 0.0)
            placed.append((earlier, "refunded" if roll < _REFUNDED else "cancelled"))
        placed.append((moment, "paid"))
    moments = [(signed_up + timedelta(seconds=round(days * DAY)), status)
               for days, status in sorted(placed)]
    return [(moment, status) for moment, status in moments if moment < now]


def _renewal_date(rng: random.Random, now: datetime) -> str:
    """A membership's renewal date (the renewal campaign asks 60 days before) for one in
    five customers, 30 to 120 days ahead; a few imports wrote something else (no_date)."""
    roll = rng.random()
    if roll < 0.005:
        return "next spring"
    if roll < 0.2:
        return (now + timedelta(days=rng.randrange(30, 120))).date().isoformat()
    return ""


def _birth_date(rng: random.Random, now: datetime) -> str:
    roll = rng.random()
    if roll < 0.15:
        return ""
    if roll < 0.16:  # leap-day birthdays
        return date(rng.choice((1964, 1976, 1988, 1992, 2000, 2004)), 2, 29).isoformat()
    if roll < 0.2:  # birthdays in the coming days, so the demo has greetings to send
        soon = now.date() + timedelta(days=rng.randrange(0, 10))
        year = rng.randrange(1960, 2005)
        return (soon.replace(year=year) if (soon.month, soon.day) != (2, 29)
                else date(year, 3, 1)).isoformat()
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 56 * 365))
    return born.isoformat()


def _basket(rng: random.Random, favourite: str, target: float) -> dict[str, int]:
    """Products (name -> quantity) worth about TARGET minor units, mostly from the
    customer's favourite category, some from its companion, a few from anywhere."""
    basket: dict[str, int] = {}
    total = 0
    while len(basket) < _MAX_LINES:
        roll = rng.random()
        category = (favourite if roll < 0.6 else _COMPANION[favourite] if roll < 0.85
                    else rng.choice(_CATEGORIES))
        products = _CATALOG[category][1]
        room = max(target - total, 0.0) * 1.3
        fitting = [p for p in products if p[1] <= room] or [min(products, key=lambda p: p[1])]
        name, price, _ = rng.choices(fitting, weights=[p[2] for p in fitting])[0]
        basket[name] = basket.get(name, 0) + 1
        total += price
        partner = _BUNDLES.get(name)
        if partner is not None and rng.random() < _BUNDLE_P:
            basket[partner] = basket.get(partner, 0) + 1
            total += _SKUS[partner][3]
        if total >= 0.85 * target:
            break
    return basket


def _write_order(sales: Any, rng: random.Random, order_id: str, buyer: _Buyer,
                 placed: datetime, status: str) -> int:
    """One order's lines; returns how many. Its basket is filled up to a value drawn from
    the customer's own spend distribution (the last product may overshoot it)."""
    target = rng.gammavariate(_SPEND_P, 1.0 / buyer.nu)
    items = [(_SKUS[name], quantity)
             for name, quantity in _basket(rng, buyer.favourite, target).items()]
    total = sum(price * quantity for (*_, price), quantity in items)
    coupon = f"WELCOME{rng.randrange(1000, 9999)}" if rng.random() < 0.04 else ""
    for (sku, product, category, price), quantity in items:
        sales.writerow([order_id, buyer.store_id, iso_z(placed), status, buyer.currency,
                        format_minor(total, buyer.currency), sku, product, category, quantity,
                        format_minor(price, buyer.currency), coupon])
    return len(items)


def write_files(folder: Path, *, customers: int, seed: int, now: datetime,
                currency: str, silent: list[str] | None = None) -> tuple[Path, Path, int]:
    """customers.csv and orders.csv in FOLDER; returns both paths and the order lines
    (SILENT: as generate's)."""
    folder.mkdir(parents=True, exist_ok=True)
    people, sales = folder / "customers.csv", folder / "orders.csv"
    with people.open("w", encoding="utf-8", newline="") as c_out, \
            sales.open("w", encoding="utf-8", newline="") as o_out:
        _, lines = generate(c_out, o_out, customers=customers, seed=seed, now=now,
                            currency=currency, silent=silent)
    return people, sales, lines


# The long-silent reader (policy.sunset): no sign of life for this long, then the monthly
# newsletter's last HISTORY_MAILS issues, none of them clicked.
SILENT_FOR = timedelta(days=300)
HISTORY_MAILS = 8
NEWSLETTER = "newsletter"


def _monthly_issues(now: datetime, tz_name: str) -> list[datetime]:
    """The last HISTORY_MAILS first-of-the-month 10:00 mornings (local) before NOW's month."""
    from mailer.core.clock import localize, zone

    tz = zone(tz_name)
    local = now.astimezone(tz)
    year, month = local.year, local.month
    issues = []
    for _ in range(HISTORY_MAILS):
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        issues.append(localize(datetime(year, month, 1, 10), tz))
    return sorted(issues)


def fill_store(engine: Engine, *, settings: Settings, customers: int, seed: int, now: datetime,
               replace: bool) -> tuple[int, int]:
    """Generate the store and import it; returns (customers, order lines) written.

    Refuses a store that has customers unless `replace`, which empties it first.
    """
    from mailer.store.customers import clear_store, customer_count
    from mailer.store.importer import RowError, import_file
    from mailer.store.records import Context

    if customer_count(engine) and not replace:
        raise UserError("the store is not empty: use --replace to delete its data first")
    if replace:
        clear_store(engine)
    checks = Context.of(settings, now)
    errors: list[RowError] = []
    written = []
    silent: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mailer-demo-") as scratch:
        people, sales, _ = write_files(Path(scratch), customers=customers, seed=seed, now=now,
                                       currency=settings.store.currency, silent=silent)
        for kind, path in (("customers", people), ("orders", sales)):
            with path.open("rb") as stream:
                report = import_file(engine, stream, kind=kind, name=path.name, fmt="csv",
                                     ctx=checks, now=now, strict=True, on_error=errors.append)
            written.append(report.written)
    if errors:  # the generator and the importer disagree: a bug, not the user's fault
        raise MailerError(f"demo data did not import: {errors[0].line}: {errors[0].reason}")
    if silent:
        _newsletter_history(engine, silent[0], _monthly_issues(now, settings.timezone))
    return written[0], written[1]


def _newsletter_history(engine: Engine, store_id: str, issues: list[datetime]) -> None:
    """The newsletter's past ISSUES, sent to STORE_ID and never clicked: the ledger rows
    that make the demo's one long-silent reader (policy.sunset)."""
    from mailer.mail.message import new_message_id
    from mailer.store.ledger import record_sent
    from mailer.store.versions import stored_version_id

    with engine.begin() as conn:
        version = stored_version_id(conn, NEWSLETTER, {"campaign": NEWSLETTER,
                                                       "history": "demo data"}, issues[0])
        record_sent(conn, store_id, [
            {"campaign": NEWSLETTER, "campaign_version_id": version,
             "occurrence": f"cron:{iso_z(issue)}", "topic": NEWSLETTER, "planned_at": issue,
             "message_id": new_message_id("shop.example")} for issue in issues])
