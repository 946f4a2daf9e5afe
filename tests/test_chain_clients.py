"""One network, every ledger: the same agents (one key each, the reference policy, the
abstract model) run on the core in memory, the signed SQLite chain, and the contract on
py-evm and on anvil; every client ends each round in the same rule state (balances, escrow,
roles, live models, beacon) — the py-evm contract both in process and served over JSON-RPC
(`evm/rpc_server.py`, what `devnet --chain embedded` uses). Keys differ by ledger (Ed25519 or
Ethereum accounts); the rules never read them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from derelayl.agents import Agent, LatentBrain
from derelayl.evm.client import ContractClient
from derelayl.evm.compare import contract_snapshot, state_snapshot
from derelayl.evm.node import anvil, anvil_path, embedded, embedded_rpc
from derelayl.evm.signing import derive_evm_keys
from derelayl.learning.latent import LatentTrainer
from derelayl.ledger import Chain, SQLiteLedger, derive_keys
from derelayl.ledger.client import ChainClient, LocalChainClient, StateClient
from derelayl.protocol import Params, initialize_state
from derelayl.runtime.driver import RoundDriver

N, ROUNDS, SEED = 10, 6, b"\x0b" * 32
PARAMS = Params(k=2, test_cases=5, testers=2, lineage_payee="model_owner")
RULE_FIELDS = (
    "round",
    "phase",
    "beacon",
    "minted",
    "burned",
    "escrow",
    "balances",
    "trainers",
    "block_miners",
    "co_testers",
    "live",
    "latest_version",
    "next_model_id",
)


def _state_client(tmp: Path) -> tuple[ChainClient, list[Agent]]:
    client = StateClient(initialize_state(PARAMS, SEED, [(i + 1).to_bytes(32, "big") for i in range(N)]))
    return client, [Agent(client.signer(k), LatentBrain(LatentTrainer(seed=1))) for k in client.state.keys]


def _sqlite_client(tmp: Path) -> tuple[ChainClient, list[Agent]]:
    keys = derive_keys(1, N)
    chain = Chain.create(SQLiteLedger(tmp / "chain.sqlite"), PARAMS, SEED, [k.public for k in keys], keys[0])
    client = LocalChainClient(chain)
    return client, [Agent(client.signer(k), LatentBrain(LatentTrainer(seed=1))) for k in keys]


def _contract_client(make_node: Callable[[], object]) -> Callable[[Path], tuple[ChainClient, list[Agent]]]:
    def make(tmp: Path) -> tuple[ChainClient, list[Agent]]:
        node = make_node()
        keys = derive_evm_keys(1, N)
        node.fund([k.address for k in keys])  # type: ignore[attr-defined]
        client = ContractClient.deploy(node, PARAMS, SEED, [k.public for k in keys], keys[0], mix_randomness=False)  # type: ignore[arg-type]
        return client, [Agent(client.signer(k), LatentBrain(LatentTrainer(seed=1))) for k in keys]

    return make


CLIENTS = {
    "memory": _state_client,
    "sqlite": _sqlite_client,
    "contract-py-evm": _contract_client(embedded),
    "contract-anvil": _contract_client(anvil),
    "contract-embedded-rpc": _contract_client(embedded_rpc),
}


def _rules(snapshot: dict) -> dict:
    return {name: snapshot[name] for name in RULE_FIELDS}


def _trajectory(name: str, tmp: Path) -> list[dict]:
    client, agents = CLIENTS[name](tmp)
    states = []
    try:
        driver = RoundDriver(client, agents)
        while client.state.round < ROUNDS:
            driver.step()
            states.append(_rules(state_snapshot(client.state)))
        if isinstance(client, ContractClient):
            # the contract's own storage agrees with the replay the client keeps
            assert _rules(contract_snapshot(client.contract)) == states[-1]
    finally:
        client.close()
    return states


@pytest.mark.parametrize(
    "name",
    [
        "sqlite",
        "contract-py-evm",
        pytest.param("contract-anvil", marks=pytest.mark.skipif(anvil_path() is None, reason="no anvil")),
        "contract-embedded-rpc",
    ],
)
def test_every_ledger_gives_the_same_rounds(name: str, tmp_path: Path) -> None:
    # Prepare: the reference trajectory on the core in memory
    expected = _trajectory("memory", tmp_path / "memory")
    # Execute
    (tmp_path / name).mkdir()
    got = _trajectory(name, tmp_path / name)
    # Assert: block by block, the same rule state
    assert len(got) == len(expected) == 4 * ROUNDS
    for i, (ours, theirs) in enumerate(zip(expected, got, strict=True)):
        assert ours == theirs, f"{name} differs after block {i + 1}: {[k for k in ours if ours[k] != theirs[k]]}"
    assert expected[-1]["minted"] > 0


@pytest.mark.parametrize(
    "backend", ["py-evm", pytest.param("anvil", marks=pytest.mark.skipif(anvil_path() is None, reason="no anvil"))]
)
def test_contract_randomness_replayed_on_a_local_chain_gives_the_same_balances(backend: str, tmp_path: Path) -> None:
    """With the EVM's prevrandao mixed in, a local chain fed the same randomness per block
    reaches the same rule state: randomness is an input the core replays. (py-evm's
    prevrandao is always zero; anvil's differs per block.)"""
    # Prepare: a contract run that mixes the chain's randomness
    node = embedded() if backend == "py-evm" else anvil()
    keys = derive_evm_keys(2, N)
    node.fund([k.address for k in keys])
    contract = ContractClient.deploy(node, PARAMS, SEED, [k.public for k in keys], keys[0], mix_randomness=True)
    agents = [Agent(contract.signer(k), LatentBrain(LatentTrainer(seed=2))) for k in keys]
    RoundDriver(contract, agents).run(ROUNDS)
    given = [event.operation.randomness for event in contract.events()]  # type: ignore[union-attr]
    assert all(len(r) == 32 for r in given)
    assert len(set(given)) == (1 if backend == "py-evm" else len(given))
    # Execute: the same network on SQLite, block i taking the contract's block i randomness
    local_keys = derive_keys(2, N)
    chain = Chain.create(
        SQLiteLedger(tmp_path / "chain.sqlite"), PARAMS, SEED, [k.public for k in local_keys], local_keys[0]
    )
    local = LocalChainClient(chain, randomness=lambda height: given[height - 1])
    RoundDriver(local, [Agent(local.signer(k), LatentBrain(LatentTrainer(seed=2))) for k in local_keys]).run(ROUNDS)
    # Assert
    assert _rules(state_snapshot(local.state)) == _rules(state_snapshot(contract.state))
    assert _rules(contract_snapshot(contract.contract)) == _rules(state_snapshot(local.state))
    assert Chain.open(chain.ledger).head_hash == chain.head_hash
    contract.close()
