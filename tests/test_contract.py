"""The contract on its own: the committed artifact is what the source compiles to, messages
signed in Python verify on chain, a rule-breaking transaction reverts with the core's error
class and changes nothing, and node/contract errors are one clear line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from derelayl.agents.latent import LatentPopulation
from derelayl.errors import ConfigError, LedgerError
from derelayl.evm.artifact import ARTIFACT, EIP170_LIMIT, compile_contract
from derelayl.evm.client import ContractClient
from derelayl.evm.compare import contract_snapshot
from derelayl.evm.node import TxFailed, connect, embedded
from derelayl.evm.signing import EvmKey, EvmSigner, compute_domain, derive_evm_keys, recover
from derelayl.learning.latent import LatentTrainer
from derelayl.protocol import Bids, Params
from derelayl.protocol.digest import compute_state_root
from derelayl.protocol.messages import BidMessage, ScoresMessage
from evm_harness import Pair


@pytest.fixture(scope="module")
def node():
    made = embedded()
    yield made
    made.close()


def test_committed_artifact_is_what_the_source_compiles_to() -> None:
    fresh = compile_contract()
    assert json.loads(ARTIFACT.read_text()) == json.loads(json.dumps(fresh)), "run python -m derelayl.evm.artifact"
    assert all(size <= EIP170_LIMIT for size in fresh["runtime_bytes"].values())


def test_python_signatures_recover_to_the_signer() -> None:
    key = derive_evm_keys(1, 1)[0]
    signer = EvmSigner(key, compute_domain(1, "0x" + "22" * 20))
    message = ScoresMessage(3, 1, b"\x01" * 32, __import__("numpy").array([5, -(2**63), 2**63 - 1]))
    sig = signer.sign(message)
    assert signer.verify(key.public, message, sig)
    assert not signer.verify(key.public, dataclasses.replace(message, round=4), sig)
    other = EvmSigner(key, compute_domain(2, "0x" + "22" * 20))  # another chain: does not verify
    assert not other.verify(key.public, message, sig)
    assert recover(b"\x00" * 32, b"\x00" * 65) is None


def test_bad_private_key_is_refused() -> None:
    with pytest.raises(ConfigError):
        EvmKey(b"\x00" * 32)
    with pytest.raises(ConfigError):
        EvmKey(b"\xff" * 32)


def test_rule_breaking_transaction_reverts_with_its_reason_and_changes_nothing(node) -> None:
    # Prepare
    pair = Pair(node, Params(k=2, test_cases=5), participants=8, seed=21)
    honest = LatentPopulation(LatentTrainer(seed=21)).next_block(pair.ref)
    top = int(honest.trainer_bids.participant[0])
    raised = honest.trainer_bids.amount.copy()
    raised[0] = int(pair.ref.balances[top]) + 1
    bad = dataclasses.replace(honest, trainer_bids=Bids(honest.trainer_bids.participant, raised))
    before = contract_snapshot(pair.client.contract)
    # Execute
    with pytest.raises(TxFailed) as caught:
        pair.client.submit(pair.proposal(bad), pair._signer_of_index(bad.miner))
    # Assert
    assert caught.value.reason.startswith("BalanceError: bid above balance")
    assert contract_snapshot(pair.client.contract) == before


def test_forged_bid_signature_reverts(node) -> None:
    pair = Pair(node, Params(k=2, test_cases=5), participants=8, seed=22)
    honest = LatentPopulation(LatentTrainer(seed=22)).next_block(pair.ref)
    proposal = pair.proposal(honest)
    stranger = pair.signers[pair.newcomers[0].public]
    forged = stranger.sign(BidMessage(honest.round, int(honest.trainer_bids.participant[0]), "trainer", 0))
    tampered = dataclasses.replace(proposal, signatures=(forged, *proposal.signatures[1:]))
    with pytest.raises(TxFailed, match="SignatureError"):
        pair.client.submit(tampered, pair._signer_of_index(honest.miner))


def test_wrong_rpc_url_missing_contract_and_wrong_chain_are_clear_errors(node) -> None:
    with pytest.raises(LedgerError, match=r"cannot reach an Ethereum node at http://127\.0\.0\.1:9"):
        connect("http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="must be an http"):
        connect("ftp://example")
    with pytest.raises(LedgerError, match="no contract at"):
        ContractClient(node, "0x" + "11" * 20)
    with pytest.raises(ConfigError, match="is not an address"):
        ContractClient(node, "0xnothex")


def test_a_client_finds_the_genesis_from_any_hint_of_the_deployment_block(node) -> None:
    """A record's ``genesis_block`` only shortens the log search: a hint past the deployment
    (a stale or edited record) still finds the contract's genesis, from block 0."""
    pair = Pair(node, Params(k=2, test_cases=5), participants=6, seed=23)
    pair.apply(LatentPopulation(LatentTrainer(seed=23)).next_block(pair.ref), "honest")
    genesis = pair.client.history.genesis_block
    assert genesis > 0
    roots = set()
    for since in (0, genesis, genesis + 1, node.block_number() + 5, -3, True):
        client = ContractClient(node, pair.client.address, since=since)
        client.sync()
        assert client.history.genesis_block == genesis
        roots.add(compute_state_root(client.state))
    assert roots == {compute_state_root(pair.client.state)}


def test_every_numbered_revert_reason_is_spelled_out() -> None:
    """The contract reverts with ``Class: n`` (code size); ``evm.reasons`` has each sentence."""
    import re

    from derelayl import errors
    from derelayl.evm.artifact import SOURCES
    from derelayl.evm.reasons import REASONS, expand

    used = re.findall(r'"([A-Z][A-Za-z]*Error): (\d+)"', "".join(p.read_text() for p in SOURCES))
    numbers = {int(n) for _, n in used}
    assert numbers == set(REASONS)  # every number spelled out, every sentence used
    for cls, n in used:
        assert issubclass(getattr(errors, cls), errors.DerelaylError)  # a core exception class
        assert [c for c, m in used if int(m) == int(n)] == [cls] * sum(int(m) == int(n) for _, m in used)
    assert expand("RoleError: 23") == f"RoleError: {REASONS[23]}" and expand("BalanceError: x") == "BalanceError: x"
