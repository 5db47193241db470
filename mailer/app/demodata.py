"""A believable synthetic store, reproducible for the same size, seed and `now`.

It writes the import formats (customers.csv, orders.csv), so the demo data goes
through the one import path and doubles as an example of the files a store
exports: names in several scripts, time zones on every continent (both sides of
the date line), birthdays including 29 February, a long tail of order counts,
refunds and cancellations, a few orders in another currency, some customers not
subscribed, referrals, tags and custom attributes.
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
                   "loyalty_tier"]
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

# category -> (sku prefix, [(product, price in minor units)])
_CATALOG = {
    "shoes": ("SH", [("Trail runner", 8900), ("City sneaker", 6990), ("Wool slipper", 3450)]),
    "outdoor": ("OD", [("Rain jacket", 12900), ("Daypack 20 l", 5990), ("Camping mug", 1290)]),
    "kitchen": ("KI", [("Cast iron pan", 4990), ("Chef's knife", 7900), ("Linen apron", 2450)]),
    "coffee": ("CO", [("Espresso beans 1 kg", 2390), ("Pour-over kettle", 4490),
                      ("Filter papers", 490)]),
    "books": ("BO", [("Field guide to birds", 2400), ("Sourdough handbook", 1999)]),
    "garden": ("GA", [("Pruning shears", 2890), ("Seed collection", 990)]),
    "beauty": ("BE", [("Hand cream", 1250), ("Beard oil", 1690)]),
    "toys": ("TO", [("Wooden train", 3990), ("Puzzle 1000", 1890)]),
}
_CATEGORIES = sorted(_CATALOG)
_DOMAINS = ["example.com", "example.org", "example.net", "shop.example", "mail.example.com"]
_TAGS = ["newsletter-2025", "wholesale", "vip", "gift-buyer", "app-user", "test-account"]


def generate(customers_out: TextIO, orders_out: TextIO, *, customers: int, seed: int,
             now: datetime, currency: str) -> tuple[int, int]:
    """Write N customers and their orders as CSV; returns (customers, order lines)."""
    rng = random.Random(f"{seed}:{customers}:{iso_z(now)}")
    people = csv.writer(customers_out, lineterminator="\n")
    sales = csv.writer(orders_out, lineterminator="\n")
    people.writerow(CUSTOMER_HEADER)
    sales.writerow(ORDER_HEADER)
    order_number, lines = 0, 0
    for index in range(1, customers + 1):
        store_id = f"C{index:06d}"
        place = rng.choices(_PLACES, weights=_PLACE_WEIGHTS)[0]
        first, first_ascii = rng.choice(place.names[0])
        last, last_ascii = rng.choice(place.names[1])
        signed_up = now - timedelta(seconds=rng.randrange(1, 4 * 365 * 86400))
        local = f"{first_ascii}.{last_ascii}{index}"
        if rng.random() < 0.05:
            local = local.capitalize()  # addresses arrive in mixed case
        people.writerow([
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
        ])
        for _ in range(_order_count(rng)):
            order_number += 1
            lines += _write_order(sales, rng, f"O{order_number:07d}", store_id, signed_up, now,
                                  currency)
    return customers, lines


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


def _order_count(rng: random.Random) -> int:
    """About 30 % never order; the rest follow a long tail."""
    if rng.random() < 0.3:
        return 0
    return min(int(rng.paretovariate(1.2)), 60)


def _write_order(sales: Any, rng: random.Random, order_id: str,
                 customer: str, signed_up: datetime, now: datetime, currency: str) -> int:
    span = max(int((now - signed_up).total_seconds()), 1)
    # Recent orders are more common than old ones.
    placed = now - timedelta(seconds=int(span * rng.random() ** 1.6))
    roll = rng.random()
    status = "refunded" if roll < 0.05 else "cancelled" if roll < 0.08 else "paid"
    order_currency = "USD" if rng.random() < 0.02 and currency != "USD" else currency
    items = []
    for category in rng.sample(_CATEGORIES, k=rng.choice((1, 1, 1, 2, 2, 3))):
        prefix, products = _CATALOG[category]
        number = rng.randrange(len(products))
        product, price = products[number]
        items.append((f"{prefix}-{number + 1:03d}", product, category, rng.choice((1, 1, 1, 2)),
                      price))
    total = sum(quantity * price for *_, quantity, price in items)
    coupon = f"WELCOME{rng.randrange(1000, 9999)}" if rng.random() < 0.04 else ""
    for sku, product, category, quantity, price in items:
        sales.writerow([order_id, customer, iso_z(placed), status, order_currency,
                        format_minor(total, order_currency), sku, product, category, quantity,
                        format_minor(price, order_currency), coupon])
    return len(items)


def write_files(folder: Path, *, customers: int, seed: int, now: datetime,
                currency: str) -> tuple[Path, Path, int]:
    """customers.csv and orders.csv in FOLDER; returns both paths and the order lines."""
    folder.mkdir(parents=True, exist_ok=True)
    people, sales = folder / "customers.csv", folder / "orders.csv"
    with people.open("w", encoding="utf-8", newline="") as c_out, \
            sales.open("w", encoding="utf-8", newline="") as o_out:
        _, lines = generate(c_out, o_out, customers=customers, seed=seed, now=now,
                            currency=currency)
    return people, sales, lines


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
    with tempfile.TemporaryDirectory(prefix="mailer-demo-") as scratch:
        people, sales, _ = write_files(Path(scratch), customers=customers, seed=seed, now=now,
                                       currency=settings.store.currency)
        for kind, path in (("customers", people), ("orders", sales)):
            with path.open("rb") as stream:
                report = import_file(engine, stream, kind=kind, name=path.name, fmt="csv",
                                     ctx=checks, now=now, strict=True, on_error=errors.append)
            written.append(report.written)
    if errors:  # the generator and the importer disagree: a bug, not the user's fault
        raise MailerError(f"demo data did not import: {errors[0].line}: {errors[0].reason}")
    return written[0], written[1]
