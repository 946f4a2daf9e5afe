"""The public API is pinned: changing it is a deliberate act."""

import derelayl.errors
import derelayl.ledger
import derelayl.protocol


def test_protocol_api_is_pinned() -> None:
    assert sorted(derelayl.protocol.__all__) == sorted(
        [
            "PRESETS",
            "UNIT",
            "Bids",
            "Block",
            "BlockKind",
            "Challenge",
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
    )
    for name in derelayl.protocol.__all__:
        assert hasattr(derelayl.protocol, name)


def test_ledger_api_is_pinned() -> None:
    assert sorted(derelayl.ledger.__all__) == [
        "Chain",
        "KeyPair",
        "Ledger",
        "MemoryLedger",
        "SQLiteLedger",
        "StoredBlock",
        "derive_keys",
    ]


def test_errors_form_one_tree() -> None:
    for name in derelayl.errors.__all__:
        assert issubclass(getattr(derelayl.errors, name), derelayl.errors.DerelaylError)


def test_protocol_core_does_no_io() -> None:
    """The rules import no I/O, clock, logging, torch or crypto libraries."""
    import ast
    from pathlib import Path

    banned = {"os", "io", "time", "datetime", "logging", "random", "sqlite3", "socket", "torch", "cryptography"}
    for path in Path(derelayl.protocol.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            else:
                continue
            assert not banned & set(names), f"{path.name} imports {banned & set(names)}"
