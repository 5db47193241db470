"""Money as integer minor units of its currency (DESIGN §3): never a float."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from mailer.core.errors import InvalidValue

_EXPONENTS = {"JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3, "OMR": 3}


def exponent(currency: str) -> int:
    """Digits after the decimal point for the currency (2 unless listed)."""
    return _EXPONENTS.get(currency.upper(), 2)


def to_minor(amount: str | int | float | Decimal, currency: str) -> int:
    """`12.34` EUR -> 1234; more decimals than the currency has is an error."""
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        raise InvalidValue(f"expected an amount like 12.34, got {amount!r}") from None
    if not value.is_finite():
        raise InvalidValue(f"expected an amount like 12.34, got {amount!r}")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise InvalidValue(
            f"amount {amount} has more than {exponent(currency)} decimals for {currency.upper()}")
    return int(scaled)


def format_minor(minor: int, currency: str) -> str:
    """1234 EUR -> '12.34' (major units, exactly)."""
    places = exponent(currency)
    return str(Decimal(minor).scaleb(-places).quantize(Decimal(1).scaleb(-places)))
