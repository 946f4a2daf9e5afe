"""Protocol parameters, validated in one place, with named presets.

``reference`` is every value of the paper's simulation (PROTOCOL.md); ``minimal`` is a
small, fast set for tests. Amounts are in smallest units (see ``types.UNIT``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from derelayl.errors import ConfigError
from derelayl.protocol.types import UNIT

__all__ = [
    "AMOUNT_FIELDS",
    "LINEAGE_PAYEES",
    "PRESETS",
    "REWARD_SCHEMES",
    "LineagePayee",
    "Params",
    "RewardScheme",
    "preset",
]

RewardScheme = Literal["lineage", "decay", "capped"]
REWARD_SCHEMES: tuple[RewardScheme, ...] = ("lineage", "decay", "capped")
LineagePayee = Literal["model_owner", "trainer"]
LINEAGE_PAYEES: tuple[LineagePayee, ...] = ("model_owner", "trainer")
_INT_FIELDS = ("k", "test_cases", "testers", "appeal_testers", "improvement_z", "challenge_window")
_OPTIONAL = {
    "min_improvement": None,
    "pooled_cases": False,
    "min_trainer_bid": 0,
    "copy_rule": False,
    "appeal_testers": 0,
    "improvement_z": 0,
    "case_commitments": False,
    "tester_stake": 0,
    "challenge_bond": 0,
    "challenge_window": 0,
}
"""Parameters added after chains existed: left out of ``to_dict`` while at these defaults."""
MAX_TESTERS = 16
MAX_IMPROVEMENT_Z = 10_000
"""Largest ``improvement_z``: 100 standard deviations."""
MAX_AMOUNT = 2**62
"""Largest amount a parameter may name, in units (sums of a round's amounts stay in int64)."""
MAX_COUNT = 1_000_000
"""Largest count a parameter may name (trainers per owner, test cases, cap, timeout blocks)."""
"""Testers per round are bounded so that every backend (the EVM contract) can take a median."""
AMOUNT_FIELDS = (
    "mo_budget",
    "reward_per_deposit",
    "reward_per_commitment",
    "reward_per_test_case",
    "reward_per_tested_model",
    "reward_per_settled_model",
    "reward_per_model_case",
    "lineage_reward",
    "supply_cap",
    "min_trainer_bid",
    "tester_stake",
    "challenge_bond",
)
"""Fields that are amounts of money, in units (``supply_cap`` may be None)."""
_MILLI = UNIT // 1000


def _fraction(value: Any, name: str) -> Fraction:
    try:
        # str() first so that 0.5 becomes exactly 1/2, not the binary float
        return Fraction(str(value))
    except (ValueError, ZeroDivisionError) as exc:
        raise ConfigError(f"{name}: {value!r} is not a number") from exc


@dataclass(frozen=True)
class Params:
    """The rules' knobs. Construct through ``Params(...)`` or ``Params.from_dict``."""

    k: int = 4
    """Trainers each model owner takes in the auction."""
    select_fraction: Fraction = Fraction(1, 2)
    """Share s of the round's models selected: the top floor(s * n_models)."""
    cap_fraction: Fraction = Fraction(1, 2)
    """Model owners + trainers = floor(cap_fraction * participants) unless ``cap`` is set."""
    cap: int | None = None
    """Absolute cap on model owners + trainers (overrides ``cap_fraction``)."""
    test_cases: int = 100
    """Test cases each tester must publish each round."""
    testers: int = 1
    """Testers who each score every committed model on their own test cases; models are ranked
    by the median of their scores. 1 (reference) = the testing miner alone."""
    mo_budget: int = _MILLI
    """Reference model-owner budget (used by the reference bid policy, kept here for configs)."""
    reward_per_deposit: int = _MILLI
    reward_per_commitment: int = _MILLI
    reward_per_test_case: int = _MILLI
    reward_per_tested_model: int = _MILLI
    reward_per_settled_model: int = _MILLI
    reward_per_model_case: int = _MILLI
    lineage_reward: int = UNIT
    """Coins minted to the owner of a selected model and of each of its ancestors."""
    reward_scheme: RewardScheme = "lineage"
    royalty_decay: Fraction = Fraction(1, 2)
    """gamma of the ``decay`` scheme: an ancestor d generations up gets gamma**d."""
    supply_cap: int | None = None
    """``capped`` scheme: minting stops where minted - burned would exceed this."""
    lineage_payee: LineagePayee = "model_owner"
    """Who is paid for each model on a winning lineage. ``model_owner`` (reference, the authors'
    simulation): the model owner of the pair that produced it, i.e. whoever handed out its
    parent (the genesis owner for the genesis model), so the selected trainer earns nothing at
    selection and the genesis owner is paid twice per selected model. ``trainer``: the
    participant that trained it (the model's holder)."""
    encryption_miner_holds_models: bool = True
    """Reference behaviour: the encryption miner receives copies of all new models (a statistic:
    they count as models it holds)."""
    trainer_holds_parent: bool = False
    """Statistic only. Reference (False): a matched trainer holds the parent only through the
    child it commits; one whose training fails holds nothing new. True: the parent it was handed
    counts as held from the deposit on."""
    min_improvement: int | None = None
    """The improvement rule (against free-riders): testers also score each live model (the
    round's parents) on their cases, and a child is selected only if its median score is at
    least its parent's + this margin (in score units: correct test cases for real models). The
    top fraction is then taken among those. None (reference): off, and testers score only the
    committed models."""
    min_trainer_bid: int = 0
    """The least deposit (units) a trainer must bid to be matched (against Sybils: every key
    that takes a training slot risks this much). 0 (reference): no entry barrier, a newcomer
    with no coins bids 0 and can still be matched."""
    pooled_cases: bool = False
    """Testers score every model on the pool of all the round's testers' test cases (in tester
    order, the testing miner's first), so honest testers report the same scores; a tester
    whose scores differ from the median scores is not paid for the test phase. False
    (reference): each tester scores on its own cases, and every tester is paid."""
    phase_timeout: int | None = None
    """Blocks (of the ledger's clock) after which any registered participant may produce a phase
    the drawn miner has not produced, and is paid its item rewards. None (reference): only the
    drawn miner ever may."""
    copy_rule: bool = False
    """How honest testers score (against copiers; needs ``min_improvement``): a child is
    compared with the live model whose predictions on the round's cases differ from its own
    in the fewest cases (its parent on a tie). If that is not its parent, the child must beat
    that model by ``min_improvement`` as well, or its testers score it 0. A scoring rule like
    the count of correct cases itself: the chain sees only the scores, and the median of
    several testers enforces it. False (reference): scores are the counts."""
    improvement_z: int = 0
    """How honest testers score (against children that only seem better, e.g. poisoned ones;
    needs ``min_improvement``), in hundredths of a standard deviation: a child's lead over the
    model it is compared with (its parent; with the copy rule, its nearest live model) must
    pass a one-sided sign test on the round's cases. With ``b`` cases only the child gets right
    and ``c`` only the other, it must hold that ``100·(b − c) ≥ improvement_z·√(b + c)``, or its
    testers score it 0 (``derelayl.protocol.copies.significant``). 0 (reference): off."""
    appeal_testers: int = 0
    """Appeals (against lying testers; needs ``pooled_cases``): when the round's pooled reports
    disagree (honest testers agree exactly, so someone lied), every tester's test reward is held
    in escrow and this many participants, drawn from the miners that did not test after the
    test block (so nobody knew them when the scores were given), re-score the same pool; the
    settle block carries their reports. The lower median of theirs then decides the round's
    scores; a tester off it forfeits its held reward to the appellants on it. 0 (reference):
    no appeals."""
    case_commitments: bool = False
    """Testers fix their test cases before any new model exists (against case pickers): each of
    the round's testers (drawn at the last settlement) signs the digest of the cases it will
    publish, and the deposit block carries these case commitments, in tester order, with the
    bids. The test block accepts a tester's report only if it names the digest that tester
    committed to. False (reference): a tester names its cases' digest when it reports, after it
    has seen the committed models."""
    tester_stake: int = 0
    """What a tester must have at stake (against lying testers; needs ``appeal_testers``), in
    units: the round's testers are drawn only from the miners whose balance is at least this
    (from every miner while fewer than ``testers`` have it), a drawn tester may not transfer
    coins until its round settles, and in a disputed round each reporting tester's stake (its
    balance, up to this) is held in escrow with its reward. A tester off the appeal's medians
    forfeits both to the appellants on them. 0 (reference): the held reward is the only stake."""
    challenge_bond: int = 0
    """Challenges (against a lie every tester of the round tells; needs ``appeal_testers``), in
    units: every tester's reward (and stake) is held until the settlement, and between the test
    block and the settle block anyone holding this bond may challenge the round straight on the
    ledger (``Challenge``). A challenge opens the appeal as a disagreement does, with appellants
    drawn at the challenge. If the appeal changes the round's scores, the challenger gets its
    bond back and a share of the forfeits; if not, the bond goes to the appellants. The settle
    block of an unchallenged round may not come before ``challenge_window`` blocks after the
    test block. 0 (reference): no challenges."""
    challenge_window: int = 0
    """Blocks (of the ledger's clock) after the test block during which a round may be
    challenged before it settles (needs ``challenge_bond``; at least 1 with it)."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "select_fraction", _fraction(self.select_fraction, "select_fraction"))
        object.__setattr__(self, "cap_fraction", _fraction(self.cap_fraction, "cap_fraction"))
        object.__setattr__(self, "royalty_decay", _fraction(self.royalty_decay, "royalty_decay"))
        if self.extra:
            raise ConfigError(f"unknown parameter(s): {', '.join(sorted(self.extra))}")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        if self.cap is not None and (not isinstance(self.cap, int) or isinstance(self.cap, bool)):
            raise ConfigError(f"cap must be an integer, got {self.cap!r}")
        for name in (
            "encryption_miner_holds_models",
            "trainer_holds_parent",
            "pooled_cases",
            "copy_rule",
            "case_commitments",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.phase_timeout is not None and (
            not isinstance(self.phase_timeout, int) or isinstance(self.phase_timeout, bool) or self.phase_timeout < 1
        ):
            raise ConfigError(
                f"phase_timeout must be a positive integer of blocks or absent, got {self.phase_timeout!r}"
            )
        if self.lineage_payee not in LINEAGE_PAYEES:
            raise ConfigError(f"lineage_payee must be model_owner or trainer, got {self.lineage_payee!r}")
        if not (0 < self.select_fraction <= 1):
            raise ConfigError(f"select_fraction must be in (0, 1], got {self.select_fraction}")
        if not (0 < self.cap_fraction < 1):
            raise ConfigError(f"cap_fraction must be in (0, 1), got {self.cap_fraction}")
        if self.cap is not None and self.cap < 1:
            raise ConfigError(f"cap must be at least 1, got {self.cap}")
        if not 1 <= self.k <= MAX_COUNT:
            raise ConfigError(f"k (trainers per model owner) must be in 1..{MAX_COUNT}, got {self.k}")
        if not 1 <= self.test_cases <= MAX_COUNT:
            raise ConfigError(f"test_cases must be in 1..{MAX_COUNT}, got {self.test_cases}")
        if self.cap is not None and self.cap > MAX_COUNT:
            raise ConfigError(f"cap must be at most {MAX_COUNT}, got {self.cap}")
        if self.min_improvement is not None and (
            not isinstance(self.min_improvement, int)
            or isinstance(self.min_improvement, bool)
            or not 1 <= self.min_improvement <= MAX_AMOUNT
        ):
            raise ConfigError(
                f"min_improvement must be an integer in 1..{MAX_AMOUNT} or absent, got {self.min_improvement!r}"
            )
        if self.copy_rule and self.min_improvement is None:
            raise ConfigError("copy_rule needs min_improvement (testers must score the live models)")
        if not 0 <= self.improvement_z <= MAX_IMPROVEMENT_Z:
            raise ConfigError(
                f"improvement_z must be in 0..{MAX_IMPROVEMENT_Z} (hundredths of a standard deviation), "
                f"got {self.improvement_z}"
            )
        if self.improvement_z and self.min_improvement is None:
            raise ConfigError("improvement_z needs min_improvement (testers must score the live models)")
        if self.phase_timeout is not None and self.phase_timeout > MAX_COUNT:
            raise ConfigError(f"phase_timeout must be at most {MAX_COUNT} blocks, got {self.phase_timeout}")
        if not 0 <= self.appeal_testers <= MAX_TESTERS:
            raise ConfigError(f"appeal_testers must be between 0 and {MAX_TESTERS}, got {self.appeal_testers}")
        if self.appeal_testers and not self.pooled_cases:
            raise ConfigError("appeal_testers needs pooled_cases (a lie shows only where honest testers agree)")
        if not 1 <= self.testers <= MAX_TESTERS:
            raise ConfigError(f"testers must be between 1 and {MAX_TESTERS}, got {self.testers}")
        for name in AMOUNT_FIELDS:
            value = getattr(self, name)
            if value is None and name == "supply_cap":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_AMOUNT:
                raise ConfigError(f"{name} must be an integer of units in 0..{MAX_AMOUNT}, got {value!r}")
        if self.tester_stake and not self.appeal_testers:
            raise ConfigError("tester_stake needs appeal_testers (only an appeal proves a lie)")
        if self.challenge_bond and not self.appeal_testers:
            raise ConfigError("challenge_bond needs appeal_testers (a challenge opens an appeal)")
        if not 0 <= self.challenge_window <= MAX_COUNT:
            raise ConfigError(f"challenge_window must be in 0..{MAX_COUNT} blocks, got {self.challenge_window}")
        if bool(self.challenge_bond) != bool(self.challenge_window):
            raise ConfigError(
                "challenge_bond and challenge_window go together: a bond of at least 1 unit and a window of "
                "at least 1 block, or neither"
            )
        if self.reward_scheme not in REWARD_SCHEMES:
            raise ConfigError(f"reward_scheme must be lineage, decay or capped, got {self.reward_scheme!r}")
        if not (0 <= self.royalty_decay < 1):
            raise ConfigError(f"royalty_decay must be in [0, 1), got {self.royalty_decay}")
        if self.reward_scheme == "capped" and self.supply_cap is None:
            raise ConfigError("reward_scheme 'capped' needs a non-negative supply_cap (units)")

    def active_cap(self, n_participants: int) -> int:
        """Model owners + trainers allowed this round; always leaves one miner."""
        cap = self.cap if self.cap is not None else int(self.cap_fraction * n_participants)
        return max(0, min(cap, n_participants - 1))

    def n_selected(self, n_models: int) -> int:
        """floor(s * n_models), exact."""
        return int(self.select_fraction * n_models)

    @property
    def compares_predictions(self) -> bool:
        """Honest testers compare models' predictions case by case (the copy rule,
        ``improvement_z``): real models scored in the clear only."""
        return self.copy_rule or self.improvement_z > 0

    def scored_models(self, n_commits: int, n_live: int) -> int:
        """Scores each tester reports: one per committed model, then (with the improvement
        rule) one per live model, in live order."""
        return n_commits + (n_live if self.min_improvement is not None else 0)

    def to_dict(self) -> dict[str, Any]:
        """Every parameter by name; the ``_OPTIONAL`` ones (added later) only when set
        (chains made before they existed name every other parameter, and stay valid)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra" or (f.name in _OPTIONAL and getattr(self, f.name) == _OPTIONAL[f.name]):
                continue
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Fraction) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Params | None = None) -> Params:
        """Build from a plain mapping (e.g. TOML); unknown keys are errors."""
        if not isinstance(data, dict):
            raise ConfigError(f"params must be a table of name = value, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {key: value for key, value in data.items() if key in names}
        unknown = {key: value for key, value in data.items() if key not in names}
        start = dataclasses.asdict(base) if base is not None else {}
        start.pop("extra", None)
        start.update(known)
        return cls(**start, extra=unknown)


PRESETS: dict[str, Params] = {
    "reference": Params(),
    "minimal": Params(k=2, test_cases=10),
}


def preset(name: str) -> Params:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
