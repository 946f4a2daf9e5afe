"""The simulator's configuration: one frozen dataclass, validated in one place.

Values are resolved in this order, later wins: the protocol preset, the ``--config`` TOML
file, the command-line flags. Every check runs before any work starts, and an invalid
value raises ``ConfigError`` with a message naming the key or flag.

TOML layout (see ``configs/*.toml``)::

    participants = 256          # top level: the simulation
    rounds = 5000
    seeds = "42"                # "0-9", "1,3,5" or a list of integers
    scheme = "lineage"          # or a list: ["lineage", "decay", "capped"]
    [protocol]                  # any ``Params`` field; money amounts in coins
    k = 4
    select_fraction = 0.5
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from derelayl.errors import ConfigError
from derelayl.protocol.appeals import CHALLENGES_NEED_A_LEDGER
from derelayl.protocol.params import AMOUNT_FIELDS, REWARD_SCHEMES, Params, preset
from derelayl.protocol.types import coins_to_units

__all__ = [
    "AMOUNT_FIELDS",
    "SCHEMES",
    "SimConfig",
    "load_toml",
    "parse_coins",
    "parse_seeds",
    "protocol_overrides",
    "resolve_config",
]

SCHEMES = REWARD_SCHEMES
# AMOUNT_FIELDS: ``Params`` fields that are money, given in coins in TOML and flags, stored in units.

_PARAM_FIELDS = tuple(f.name for f in dataclasses.fields(Params) if f.name != "extra")


MAX_PARTICIPANTS = 10_000_000
MAX_ROUNDS = 10_000_000
MAX_SEEDS = 10_000


def memory_estimate(cells: int) -> int:
    """Bytes a simulation of ``cells`` = participants x rounds x parallel runs needs, measured
    (peak RSS): 20,000 x 250 took 289 MB and 20,000 x 1,000 took 493 MB, i.e. ~220 MB of
    interpreter and libraries plus ~14 bytes per cell; rounded up to 250 MB + 16 B per cell."""
    return 250 * 2**20 + 16 * cells


def usable_memory() -> int:
    """Three quarters of the machine's physical memory."""
    try:
        return int(0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return 8 * 2**30


@dataclass(frozen=True)
class SimConfig:
    """Everything one ``derelayl simulate`` invocation needs."""

    participants: int = 256
    rounds: int = 5000
    seeds: tuple[int, ...] = (42,)
    schemes: tuple[str, ...] = ("lineage",)
    params: Params = field(default_factory=lambda: preset("reference"))
    preset: str = "reference"
    success_rate: float = 0.9
    gain_mean: float = 1.0
    gain_std: float = 1.0
    join_rate: float = 0.0
    sybil_share: float = 0.0
    """Share of the initial participants run by one Sybil operator: as trainers they bid the
    least the rules allow and free-ride (``LatentPopulation.sybil``)."""
    """New participants per round (fractions accumulate: 0.5 = one every two rounds)."""
    version_rounds: int = 100
    """Rounds shown in the version-distribution figure (the paper shows 100)."""
    sample_lines: int = 256
    """Participants drawn as lines in the coins figure (all of them at the reference size)."""
    traces: bool = False
    figures: bool = True
    workers: int = 2

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for key in ("success_rate", "gain_mean", "gain_std", "join_rate", "sybil_share"):
            if not math.isfinite(getattr(self, key)):
                raise ConfigError(f"{key} must be a finite number, got {getattr(self, key)}")
        if not 2 <= self.participants <= MAX_PARTICIPANTS:
            raise ConfigError(f"participants must be in 2..{MAX_PARTICIPANTS:,}, got {self.participants:,}")
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise ConfigError(f"rounds must be in 1..{MAX_ROUNDS:,}, got {self.rounds:,}")
        if self.join_rate * self.rounds > MAX_PARTICIPANTS:
            raise ConfigError(f"join_rate {self.join_rate} adds over {MAX_PARTICIPANTS:,} participants")
        cells = self.participants * self.rounds * min(self.workers, len(self.jobs()) or 1)
        need, have = memory_estimate(cells), usable_memory()
        if need > have:
            raise ConfigError(
                f"participants x rounds x parallel runs = {cells:,} needs about {need / 2**30:.1f} GiB; "
                f"this machine has {have / 2**30:.1f} GiB to spare: make the run smaller"
            )
        if not self.seeds:
            raise ConfigError("seeds: give at least one seed")
        if any(s < 0 for s in self.seeds):
            raise ConfigError(f"seeds must be non-negative, got {list(self.seeds)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds repeat: {list(self.seeds)}")
        for scheme in self.schemes:
            if scheme not in SCHEMES:
                raise ConfigError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        if len(set(self.schemes)) != len(self.schemes) or not self.schemes:
            raise ConfigError(f"schemes must be distinct and non-empty, got {list(self.schemes)}")
        if "capped" in self.schemes and self.params.supply_cap is None:
            raise ConfigError("scheme 'capped' needs a supply cap: --supply-cap COINS (or protocol.supply_cap)")
        if not (0.0 <= self.success_rate <= 1.0):
            raise ConfigError(f"success_rate must be in [0, 1], got {self.success_rate}")
        if self.gain_std < 0:
            raise ConfigError(f"gain_std must be non-negative, got {self.gain_std}")
        if not 0 <= self.sybil_share < 1:
            raise ConfigError(f"sybil_share must be in [0, 1), got {self.sybil_share}")
        if self.join_rate < 0:
            raise ConfigError(f"join_rate must be non-negative, got {self.join_rate}")
        cap = self.params.cap
        if cap is not None and cap > self.participants:
            raise ConfigError(f"cap ({cap}) is above the number of participants ({self.participants})")
        if self.version_rounds < 1:
            raise ConfigError(f"version_rounds must be at least 1, got {self.version_rounds}")
        if self.sample_lines < 1:
            raise ConfigError(f"sample_lines must be at least 1, got {self.sample_lines}")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")

    @property
    def total_joins(self) -> int:
        return int(self.join_rate * self.rounds)

    @property
    def width(self) -> int:
        """Participants at the end of a run (columns of the traces)."""
        return self.participants + self.total_joins

    def params_for(self, scheme: str) -> Params:
        return dataclasses.replace(self.params, reward_scheme=scheme)  # type: ignore[arg-type]

    def jobs(self) -> list[tuple[str, int]]:
        """(scheme, seed) of every run, scheme-major."""
        return [(scheme, seed) for scheme in self.schemes for seed in self.seeds]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Params):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def parse_seeds(text: str | int | list[int]) -> tuple[int, ...]:
    """``"0-9"`` (inclusive), ``"1,3,5"``, ``"42"``, an int, or a list of ints."""
    if isinstance(text, bool):
        raise ConfigError(f"seeds: not a seed list: {text!r}")
    if isinstance(text, int):
        return (text,)
    if isinstance(text, list):
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in text):
            raise ConfigError(f"seeds: a list must hold integers, got {text!r}")
        if len(text) > MAX_SEEDS:
            raise ConfigError(f"seeds: more than {MAX_SEEDS:,} seeds")
        return tuple(text)
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                if int(hi) < int(lo):
                    raise ConfigError(f"seeds: empty range {part!r}")
                if int(hi) - int(lo) + len(seeds) >= MAX_SEEDS:
                    raise ConfigError(f"seeds: {part!r} is more than {MAX_SEEDS:,} seeds")
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError as exc:
        raise ConfigError(f"seeds: cannot read {text!r} (use 42, 0-9 or 1,3,5)") from exc
    return tuple(seeds)


def parse_schemes(value: str | list[str]) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(str(s).strip() for s in items if str(s).strip())


def parse_coins(value: Any, name: str) -> int:
    """An amount of coins as written (a string, an integer or a TOML decimal) in units, >= 0;
    errors name ``name``."""
    if isinstance(value, bool):
        raise ConfigError(f"{name}: {value!r} is not an amount of coins")
    if isinstance(value, float):
        value = str(value)  # 0.001 -> "0.001": the decimal the user wrote
    try:
        units = int(coins_to_units(value if isinstance(value, (int, str)) else str(value)))
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from exc
    if units < 0:
        raise ConfigError(f"{name} must be non-negative, got {value}")
    return units


def protocol_overrides(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Protocol values (amounts in coins) to ``Params.from_dict`` input (amounts in units)."""
    unknown = sorted(set(data) - set(_PARAM_FIELDS))
    if unknown:
        raise ConfigError(
            f"{where.rstrip('.')}: unknown protocol key(s): {', '.join(unknown)}; known: {', '.join(_PARAM_FIELDS)}"
        )
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in AMOUNT_FIELDS and value is not None:
            # named as the user wrote it: --supply-cap on the command line, protocol.supply_cap in a file
            out[key] = parse_coins(value, f"--{key.replace('_', '-')}" if where == "--" else f"{where}{key}")
        elif key in ("select_fraction", "cap_fraction", "royalty_decay"):
            out[key] = Decimal(str(value)) if isinstance(value, float) else value
        else:
            out[key] = value
    for key in ("select_fraction", "cap_fraction", "royalty_decay"):
        if isinstance(out.get(key), Decimal):
            out[key] = str(out[key])
    return out


_TOP_KEYS = {f.name for f in dataclasses.fields(SimConfig)} - {"params", "schemes", "seeds"} | {
    "scheme",
    "seeds",
    "protocol",
    "adversaries",
}
SIM_ADVERSARIES = ("sybil",)
"""Dishonest kinds the latent simulation models (``[adversaries]``): a Sybil operator's keys
bid the least the rules allow and free-ride. The other kinds need real models (``derelayl
experiment`` / ``attacks``)."""


def load_toml(path: Path) -> dict[str, Any]:
    """Read a config file; unknown keys are errors (before any work starts)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    check_keys(data, str(path))
    return data


def check_keys(data: dict[str, Any], where: str) -> None:
    """Unknown keys and a [protocol] that is not a table are errors."""
    unknown = sorted(str(k) for k in set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s): {', '.join(unknown)}; known: {', '.join(sorted(_TOP_KEYS))}")
    if not isinstance(data.get("protocol", {}), dict):
        raise ConfigError(f"{where}: [protocol] must be a table")
    adversaries = data.get("adversaries", {})
    if not isinstance(adversaries, dict):
        raise ConfigError(f"{where}: [adversaries] must be a table of kind = share")
    other = sorted(str(k) for k in set(adversaries) - set(SIM_ADVERSARIES))
    if other:
        raise ConfigError(
            f"{where}: [adversaries] {', '.join(other)}: the latent simulation models only "
            f"{', '.join(SIM_ADVERSARIES)} (the other kinds need real models: derelayl experiment or attacks)"
        )
    share = adversaries.get("sybil", 0.0)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
        raise ConfigError(f"{where}: [adversaries] sybil must be a share in [0, 1), got {share!r}")


def resolve_config(
    file_values: dict[str, Any] | None = None,
    flag_values: dict[str, Any] | None = None,
    flag_protocol: dict[str, Any] | None = None,
) -> SimConfig:
    """preset <- file <- flags. ``flag_*`` hold only the flags the user actually gave."""
    file_values = dict(file_values or {})
    check_keys(file_values, "config")
    flag_values = {k: v for k, v in (flag_values or {}).items() if v is not None}
    flag_protocol = {k: v for k, v in (flag_protocol or {}).items() if v is not None}
    from_file = {k: v for k, v in file_values.items() if k not in ("protocol", "adversaries")}
    if "sybil" in file_values.get("adversaries", {}):  # [adversaries] sybil = share (same as sybil_share)
        if "sybil_share" in from_file:
            raise ConfigError("config: give the Sybil share once, as [adversaries] sybil or as sybil_share")
        from_file["sybil_share"] = file_values["adversaries"]["sybil"]
    merged: dict[str, Any] = {**from_file, **flag_values}

    name = str(merged.pop("preset", "reference"))
    protocol = {
        **protocol_overrides(file_values.get("protocol", {}), "protocol."),
        **protocol_overrides(flag_protocol, "--"),
    }
    params = Params.from_dict(protocol, base=preset(name))
    if params.compares_predictions:
        raise ConfigError(
            "protocol.copy_rule and protocol.improvement_z compare real models' predictions; latent models have none"
        )
    if params.challenge_bond:
        raise ConfigError(f"protocol.{CHALLENGES_NEED_A_LEDGER}")
    if "scheme" in merged:
        schemes = parse_schemes(merged.pop("scheme"))
    else:
        schemes = (params.reward_scheme,)
    seeds = parse_seeds(merged.pop("seeds", 42))
    for key in ("participants", "rounds", "version_rounds", "sample_lines", "workers"):
        if key in merged and (not isinstance(merged[key], int) or isinstance(merged[key], bool)):
            raise ConfigError(f"{key} must be an integer, got {merged[key]!r}")
    for key in ("success_rate", "gain_mean", "gain_std", "join_rate", "sybil_share"):
        if key in merged:
            if isinstance(merged[key], bool):
                raise ConfigError(f"{key} must be a number, got {merged[key]!r}")
            try:
                merged[key] = float(merged[key])
            except (TypeError, ValueError, OverflowError) as exc:
                raise ConfigError(f"{key} must be a number, got {str(merged[key])[:40]}") from exc
    return SimConfig(params=params, preset=name, schemes=schemes, seeds=seeds, **merged)
