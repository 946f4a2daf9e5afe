"""Small value types of the protocol: coins and participant ids.

Coins are integers of a smallest unit (``UNIT`` units make one coin). The reference
rewards of 0.001 coin are exactly 1,000 units; decaying royalties have room for six
decimal places. Balances live in ``numpy.int64`` arrays: the reference run's largest
supply (4.9e8 coins = 4.9e14 units) is far below 2**63.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from enum import IntEnum
from typing import NewType

from derelayl.errors import ConfigError

__all__ = [
    "UNIT",
    "BlockKind",
    "Participant",
    "Phase",
    "Units",
    "coins_to_units",
    "format_units",
    "units_to_coins",
]

UNIT = 1_000_000
"""Smallest units per coin."""

Units = NewType("Units", int)
"""An amount of money in smallest units."""

Participant = NewType("Participant", int)
"""A participant's index in registration order (its public key lives in ``State.keys``)."""


class Phase(IntEnum):
    """Which block the round expects next."""

    DEPOSIT = 0
    COMMIT = 1
    TEST = 2
    SETTLE = 3


class BlockKind(IntEnum):
    """The four blocks of a round, plus genesis."""

    DEPOSIT = 0
    COMMIT = 1
    TEST = 2
    SETTLE = 3
    GENESIS = 9


def coins_to_units(value: str | int | Decimal) -> Units:
    """Parse a decimal coin amount exactly ("0.001" -> 1000). Floats are refused."""
    if isinstance(value, float):
        raise ConfigError(f"coin amount {value!r} must be given as a string or integer, not a float")
    try:
        dec = Decimal(value)
    except InvalidOperation as exc:
        raise ConfigError(f"not a coin amount: {value!r}") from exc
    if not dec.is_finite():
        raise ConfigError(f"coin amount {value!r} is not a finite number")
    units = dec * UNIT
    if units != units.to_integral_value():
        raise ConfigError(f"coin amount {value!r} is finer than the smallest unit 1/{UNIT}")
    return Units(int(units))


def units_to_coins(units: int) -> float:
    """Units as a float number of coins, for display and figures only."""
    return units / UNIT


def format_units(units: int) -> str:
    """Exact decimal string of an amount in coins."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(int(units)), UNIT)
    text = f"{sign}{whole}.{frac:06d}".rstrip("0").rstrip(".")
    return text
