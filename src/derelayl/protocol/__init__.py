"""The DeRelayL rules: pure, deterministic, exactly accounted. No I/O, clock, global RNG or logging."""

from derelayl.protocol.blocks import (
    Bids,
    Block,
    CommitBlock,
    CommitReceipt,
    DepositBlock,
    DepositReceipt,
    Join,
    Operation,
    PostedCommitment,
    SettleBlock,
    SettleReceipt,
    TestBlock,
    TesterReport,
    TestReceipt,
    Transfer,
)
from derelayl.protocol.genesis import initialize_state
from derelayl.protocol.params import PRESETS, Params, preset
from derelayl.protocol.roles import assign_roles
from derelayl.protocol.state import Models, Pairs, Roles, State
from derelayl.protocol.transition import (
    process_block,
    process_commit_block,
    process_deposit_block,
    process_operation,
    process_settle_block,
    process_test_block,
    total_money,
)
from derelayl.protocol.types import UNIT, BlockKind, Phase, coins_to_units, format_units, units_to_coins

__all__ = [
    "PRESETS",
    "UNIT",
    "Bids",
    "Block",
    "BlockKind",
    "CommitBlock",
    "CommitReceipt",
    "DepositBlock",
    "DepositReceipt",
    "Join",
    "Models",
    "Operation",
    "Pairs",
    "Params",
    "Phase",
    "PostedCommitment",
    "Roles",
    "SettleBlock",
    "SettleReceipt",
    "State",
    "TestBlock",
    "TestReceipt",
    "TesterReport",
    "Transfer",
    "assign_roles",
    "coins_to_units",
    "format_units",
    "initialize_state",
    "preset",
    "process_block",
    "process_commit_block",
    "process_deposit_block",
    "process_operation",
    "process_settle_block",
    "process_test_block",
    "total_money",
    "units_to_coins",
]
