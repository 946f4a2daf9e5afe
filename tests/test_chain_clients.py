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
from derelayl.protocol.blocks import Join
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


@pytest.mark.skipif(anvil_path() is None, reason="no anvil")
def test_a_contract_client_that_sends_also_applies_what_others_sent_since_its_last_sync() -> None:
    """Two clients of one contract (two nodes): B's join is still pending when A syncs and
    sends its own, and both are mined in one block (anvil mining every second). A's view must
    contain both: it once applied only its own receipt's logs and skipped the rest."""
    from eth_account import Account

    # Prepare
    node = anvil()
    keys = derive_evm_keys(3, N + 2)
    node.fund([k.address for k in keys])
    a = ContractClient.deploy(node, PARAMS, SEED, [k.public for k in keys[:N]], keys[0], mix_randomness=False)
    b = ContractClient(node, a.address)
    node.w3.provider.make_request("evm_setAutomine", [False])
    node.w3.provider.make_request("evm_setIntervalMining", [1])
    tx = {"chainId": node.chain_id, "nonce": 0, "gas": 500_000, "value": 0, "to": a.address, "type": 2}
    tx |= {"data": b.contract.encode_abi("register", args=[]), **node.fees()}
    # Execute: B's join is sent (not yet mined); A syncs and sends its own
    node.w3.eth.send_raw_transaction(Account.sign_transaction(tx, keys[N].secret).raw_transaction)
    a.send(Join(keys[N + 1].public), a.signer(keys[N + 1]))
    # Assert
    b.sync()
    assert a.state.keys == b.state.keys and len(a.state.keys) == N + 2
    assert {a.state.key_index[keys[N].public], a.state.key_index[keys[N + 1].public]} == {N, N + 1}
    node.close()
