"""Parameters validate in one place; presets hold the paper's reference values; coins are exact."""

from __future__ import annotations

from fractions import Fraction

import pytest

from derelayl.errors import ConfigError
from derelayl.protocol import UNIT, Params, coins_to_units, format_units, preset


def test_reference_preset_matches_protocol_md() -> None:
    p = preset("reference")
    assert (p.k, p.select_fraction, p.cap_fraction, p.test_cases) == (4, Fraction(1, 2), Fraction(1, 2), 100)
    assert p.active_cap(256) == 128
    assert p.mo_budget == coins_to_units("0.001") == 1000
    assert p.lineage_reward == UNIT
    assert p.n_selected(7) == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"select_fraction": 0}, "select_fraction must be in"),
        ({"select_fraction": "1.5"}, "select_fraction must be in"),
        ({"k": 0}, r"k \(trainers per model owner\) must be in 1\.\.1000000"),
        ({"k": 2.5}, "k must be an integer"),
        ({"k": True}, "k must be an integer"),
        ({"test_cases": 10**7}, "test_cases must be in"),
        ({"encryption_miner_holds_models": "no"}, "must be true or false"),
        ({"cap_fraction": 1}, "cap_fraction"),
        ({"reward_per_deposit": -1}, r"integer of units in 0\.\."),
        ({"mo_budget": 10**30}, r"mo_budget must be an integer of units in 0\.\."),
        ({"reward_scheme": "bonus"}, "reward_scheme"),
        ({"reward_scheme": "capped"}, "supply_cap"),
        ({"royalty_decay": 1}, "royalty_decay"),
        ({"colour": "blue"}, "unknown parameter"),
        ({"select_fraction": "half"}, "not a number"),
    ],
)
def test_invalid_params_are_named(change, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Params.from_dict(change)


def test_params_round_trip() -> None:
    p = Params(k=3, select_fraction="1/3", reward_scheme="decay", royalty_decay="0.9")
    assert Params.from_dict(p.to_dict()) == p


def test_coins_are_exact() -> None:
    assert coins_to_units("0.001") * 1000 == UNIT
    assert format_units(coins_to_units("1234.000567")) == "1234.000567"
    with pytest.raises(ConfigError, match="finer than"):
        coins_to_units("0.0000001")
    with pytest.raises(ConfigError, match="not a float"):
        coins_to_units(0.1)  # type: ignore[arg-type]


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("fast")
