"""A participant's view of the contract: deploy it, send blocks and operations to it, and keep
the rules' state as a verified replay of its logs (``History``).

``submit`` turns a miner's ``Proposal`` into the phase transaction (each item with its
sender's secp256k1 signature), sends it from the miner's own account and then applies the
transaction's logs to the replay, so the state every agent reads is the core's, checked
against the contract's checkpoint after every block.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from derelayl.errors import ConfigError, LedgerError, MalformedError, UnknownParticipantError
from derelayl.evm.artifact import load_artifact
from derelayl.evm.history import History, LogEntry, decode_logs
from derelayl.evm.node import Node
from derelayl.evm.signing import EvmKey, EvmSigner, address_of_key
from derelayl.ledger.client import ChainClient, ChainEvent
from derelayl.ledger.crypto import canonical
from derelayl.protocol.blocks import (
    Challenge,
    CommitBlock,
    DepositBlock,
    Direct,
    Join,
    PostedCommitment,
    TestBlock,
    TesterReport,
    is_block,
)
from derelayl.protocol.lineage import compute_multipliers
from derelayl.protocol.messages import Proposal
from derelayl.protocol.params import Params
from derelayl.protocol.state import State

__all__ = ["MAX_PARTICIPANTS", "ContractClient", "contract_params", "encode_proposal"]

MAX_PARTICIPANTS = 1024
"""The contract's bound on registered participants (bitmaps of 4 words)."""
_SCHEMES = {"lineage": 0, "decay": 1, "capped": 2}


def contract_params(params: Params) -> tuple[Any, ...]:
    """The contract's ``Params`` struct for the core's parameters."""
    multipliers = compute_multipliers(
        params.reward_scheme, params.lineage_reward, params.royalty_decay.numerator, params.royalty_decay.denominator
    )
    if len(multipliers) > 256:
        raise ConfigError(f"royalty_decay keeps {len(multipliers)} generations; the contract takes at most 256")
    return (
        params.k,
        params.select_fraction.numerator,
        params.select_fraction.denominator,
        params.cap_fraction.numerator,
        params.cap_fraction.denominator,
        params.cap or 0,
        params.test_cases,
        params.testers,
        params.mo_budget,
        params.reward_per_deposit,
        params.reward_per_commitment,
        params.reward_per_test_case,
        params.reward_per_tested_model,
        params.reward_per_settled_model,
        params.reward_per_model_case,
        params.lineage_reward,
        _SCHEMES[params.reward_scheme],
        params.supply_cap or 0,
        params.lineage_payee == "trainer",
        params.phase_timeout or 0,
        params.min_improvement or 0,
        params.pooled_cases,
        params.min_trainer_bid,
        params.appeal_testers,
        params.case_commitments,
        params.tester_stake,
        params.challenge_bond,
        params.challenge_window,
        list(multipliers),
    )


def _vrs(signature: bytes) -> tuple[int, bytes, bytes]:
    if len(signature) != 65:
        raise ConfigError("an EVM message signature is 65 bytes (r, s, v)")
    return signature[64], signature[:32], signature[32:64]


def _reports(reports: tuple[TesterReport, ...], sigs: list[bytes], who: str) -> tuple[list[Any], list[int]]:
    """Signed reports as the contract takes them: (tester, digest, v, r, s) each, the scores flat."""
    if len({r.scores.size for r in reports}) > 1:
        raise MalformedError(f"{who} gave different numbers of scores")
    items = [(r.tester, r.test_cases_digest, *_vrs(s)) for r, s in zip(reports, sigs, strict=True)]
    return items, [int(x) for r in reports for x in r.scores]


def encode_proposal(contract: Any, proposal: Proposal) -> bytes:
    """Calldata of the phase transaction for a miner's proposal."""
    block, sigs = proposal.block, list(proposal.signatures)
    if isinstance(block, DepositBlock):
        t, m = len(block.trainer_bids), len(block.mo_bids)

        def bids(b: Any, signatures: list[bytes]) -> list[tuple[Any, ...]]:
            return [(int(p), int(a), *_vrs(s)) for p, a, s in zip(b.participant, b.amount, signatures, strict=True)]

        j = t + m + len(block.joins)
        joins = [(address_of_key(k), *_vrs(s)) for k, s in zip(block.joins, sigs[t + m : j], strict=True)]
        cases = [(c.tester, c.digest, *_vrs(s)) for c, s in zip(block.case_commitments, sigs[j:], strict=True)]
        trainer_bids, mo_bids = bids(block.trainer_bids, sigs[:t]), bids(block.mo_bids, sigs[t : t + m])
        args: list[Any] = [block.round, trainer_bids, mo_bids, joins, cases]
        name = "deposit"
    elif isinstance(block, CommitBlock):
        items = [(int(p), d, *_vrs(s)) for p, d, s in zip(block.trainers, block.commitments, sigs, strict=True)]
        args, name = [block.round, items, block.fhe_public_key], "commit"
    elif isinstance(block, TestBlock):
        reports, flat = _reports(block.co_testers, sigs, "test block: co-testers")
        scores = [int(x) for x in block.scores]
        args, name = [block.round, block.n_test_cases, block.test_cases_digest, scores, reports, flat], "test"
    else:
        reports, flat = _reports(block.appeals, sigs, "settle block: appellants")
        args, name = [block.round, reports, flat], "settle"
    try:
        data = contract.encode_abi(name, args=args)
    except Exception as exc:  # web3 raises its own types for values outside the ABI types
        raise MalformedError(f"{name} block cannot be encoded for the contract ({type(exc).__name__})") from exc
    return bytes.fromhex(data.removeprefix("0x"))


class ContractClient(ChainClient):
    def __init__(self, node: Node, address: str, on_event: Any = None, since: int = 0) -> None:
        """``since``: a hint, the block of the contract's deployment, where the search for its
        genesis log starts (a node may answer a log search from block 0 on a long chain slowly:
        eth-tester reads every receipt since). A hint past the deployment finds no log there,
        and the search starts again from block 0."""
        w3 = node.w3
        self.node = node
        try:
            self.address = w3.to_checksum_address(address)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"--contract {address!r} is not an address") from exc
        if not bytes(w3.eth.get_code(self.address)):
            raise LedgerError(f"no contract at {self.address} on chain {node.chain_id}")
        artifact = load_artifact()
        self.contract = w3.eth.contract(address=self.address, abi=artifact["abi"])
        self._check_extension(artifact["extension_runtime_keccak"])
        self.history = self._genesis(since)
        self.history.on_event = on_event
        self._synced_to = self.history.genesis_block
        self.last_tx: Any = None
        """The receipt of the last transaction this client sent (gas used, block)."""

    @classmethod
    def deploy(
        cls,
        node: Node,
        params: Params,
        seed: bytes,
        keys: list[bytes],
        deployer: EvmKey,
        *,
        mix_randomness: bool = True,
        genesis_model: bytes = bytes(32),
    ) -> ContractClient:
        """Deploy the contract with ``keys`` (32-byte padded addresses) registered; participant
        0 holds the genesis model, whose SHA-256 is ``genesis_model`` (zero for the abstract
        model)."""
        if len(keys) > MAX_PARTICIPANTS:
            raise ConfigError(f"the contract takes at most {MAX_PARTICIPANTS} participants, got {len(keys)}")
        artifact = load_artifact()
        # the extension first (no constructor): DeRelayL fixes its address at deployment
        extension = node.send(deployer, None, bytes.fromhex(artifact["extension_bytecode"].removeprefix("0x")))
        factory = node.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        addresses = [address_of_key(k) for k in keys]
        data = factory.constructor(
            extension["contractAddress"],
            contract_params(params),
            seed,
            addresses,
            mix_randomness,
            canonical(params.to_dict()).decode(),
            genesis_model,
        ).data_in_transaction
        receipt = node.send(deployer, None, data)
        return cls(node, receipt["contractAddress"], since=int(extension["blockNumber"]))

    def _check_extension(self, expected: str) -> None:
        """DeRelayL runs its extension's code on its own storage: that code must be ours."""
        w3 = self.node.w3
        try:
            extension = self.contract.functions.EXTENSION().call()
        except Exception as exc:  # web3 raises its own types when a call reverts or answers garbage
            raise LedgerError(f"{self.address} is not a DeRelayL contract (no EXTENSION)") from exc
        if "0x" + bytes(w3.keccak(bytes(w3.eth.get_code(extension)))).hex() != expected:
            raise LedgerError(f"{self.address} delegates to {extension}, whose code is not DeRelayL's TestAndSettle")

    def _genesis(self, since: int) -> History:
        since = since if isinstance(since, int) and not isinstance(since, bool) and since >= 0 else 0
        logs = self.contract.events.Genesis().get_logs(from_block=since)
        if not logs and since > 0:
            logs = self.contract.events.Genesis().get_logs(from_block=0)
        if len(logs) != 1:
            raise LedgerError(f"{self.address} is not a DeRelayL contract (no genesis log)")
        log = logs[0]
        entry = LogEntry(
            int(log["blockNumber"]), int(log["logIndex"]), bytes(log["transactionHash"]), "Genesis", dict(log["args"])
        )
        return History(entry, self.address, self.node.chain_id)

    # ------------------------------------------------------------ ChainClient

    @property
    def state(self) -> State:
        return self.history.state

    @property
    def synced_to(self) -> int:
        """The newest block whose logs are applied."""
        return self._synced_to

    def sync(self) -> list[ChainEvent]:
        """Apply every log up to the node's newest block."""
        return self._sync_through(self.node.block_number())

    def _sync_through(self, head: int) -> list[ChainEvent]:
        """Apply every log up to block ``head`` (the history skips what it has applied)."""
        if head <= self._synced_to:
            return []
        logs = self.node.w3.eth.get_logs({"address": self.address, "fromBlock": self._synced_to, "toBlock": head})
        applied = self.history.apply(decode_logs(self.contract, logs))
        self._synced_to = head
        return applied

    def _send(self, sender: EvmSigner, data: bytes) -> Any:
        """Send, then apply every log up to the receipt's block: others' transactions mined
        since our last sync come first (applying only our receipt's logs would skip them)."""
        self.sync()
        receipt = self.node.send(sender.key, self.address, data)
        self.last_tx = receipt
        mined = int(receipt["blockNumber"])
        applied = [e for e in self._sync_through(mined) if e.height == mined]
        return receipt, applied

    def submit(self, proposal: Proposal, miner: EvmSigner) -> Any:
        if not isinstance(miner, EvmSigner):
            raise ConfigError("a contract's blocks are sent from the miner's Ethereum account")
        _, applied = self._send(miner, encode_proposal(self.contract, proposal))
        blocks = [e for e in applied if is_block(e.operation)]
        return blocks[-1].receipt if blocks else None

    def send(self, operation: Direct, sender: EvmSigner) -> Any:
        if isinstance(operation, Join):
            data = self.contract.encode_abi("register", args=[])
        elif isinstance(operation, PostedCommitment):
            item = (operation.trainer, operation.digest, *_vrs(operation.signature))
            data = self.contract.encode_abi("post", args=[operation.round, item])
        elif isinstance(operation, Challenge):
            # the challenger is the sender's account; the contract stamps time and randomness
            own = self.state.key_index.get(sender.public)
            if own is not None and own != operation.challenger:
                raise MalformedError(
                    f"a challenge by participant {operation.challenger} is sent from its own account, "
                    f"not participant {own}'s"
                )
            try:
                data = self.contract.encode_abi("challenge", args=[operation.round])
            except Exception as exc:  # web3 raises its own types for values outside the ABI types
                raise MalformedError(f"a challenge of round {operation.round!r} cannot be encoded") from exc
        else:
            if not 0 <= operation.recipient < self.state.n_participants:
                raise UnknownParticipantError(
                    f"transfer recipient {operation.recipient} is not a registered participant"
                )
            to = address_of_key(self.state.keys[operation.recipient])
            data = self.contract.encode_abi("transfer", args=[to, operation.amount])
        _, applied = self._send(sender, bytes.fromhex(data.removeprefix("0x")))
        return applied[-1].receipt if applied else None

    def wait_until(self, time: int) -> None:
        """Mine empty blocks until the chain's block number is at least ``time`` (the next
        transaction then lands in a later block)."""
        self.node.mine(time - self.node.block_number())
        self.sync()

    def events(self, start: int = 0) -> Iterator[ChainEvent]:
        self.sync()
        yield from self.history.events[start:]

    def head(self) -> tuple[int, bytes]:
        block = self.node.w3.eth.get_block("latest")
        return int(block["number"]), bytes(block["hash"])

    def signer(self, key: EvmKey) -> EvmSigner:
        return EvmSigner(key, self.history.domain)

    def close(self) -> None:
        self.node.close()
