"""A verified chain of signed blocks over any ``Ledger``: the rules applied to stored bytes.

``Chain.create`` writes the genesis block; ``Chain.open`` replays a stored chain from genesis
and raises ``ChainIntegrityError`` naming the first bad block; ``Chain.produce`` signs and
stores a block a local miner made; ``Chain.append`` checks and stores a block someone else
made. A block is applied to a copy of the state and only swapped in once it is on disk, so a
rejected or unstorable block leaves state and storage as they were.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from derelayl import jsonsafe
from derelayl.errors import (
    ChainIntegrityError,
    DerelaylError,
    LedgerError,
    MalformedError,
    ProtocolError,
    SignatureError,
)
from derelayl.ledger.base import Ledger, StoredBlock
from derelayl.ledger.codec import (
    ZERO_HASH,
    Proposal,
    decode_block,
    decode_header,
    encode_block,
    parse_header,
    proposal_of,
    seal,
)
from derelayl.ledger.crypto import KeyPair, canonical, sha256, verify_signature
from derelayl.protocol.blocks import Block
from derelayl.protocol.digest import compute_state_root
from derelayl.protocol.genesis import initialize_state
from derelayl.protocol.params import Params
from derelayl.protocol.state import State
from derelayl.protocol.transition import process_block, total_money

__all__ = ["PROTOCOL_ID", "Chain", "Receipt"]

Receipt = Any
OnBlock = Callable[[StoredBlock, Block | None, Receipt, State], None]
PROTOCOL_ID = "derelayl/2"


GENESIS_HEADER = {"height", "prev", "round", "kind", "miner", "body", "state_root"}


@dataclass
class Chain:
    ledger: Ledger
    state: State
    chain_id: bytes
    head_hash: bytes

    @property
    def height(self) -> int:
        return self.ledger.height()

    # ------------------------------------------------------------ genesis

    @classmethod
    def create(cls, ledger: Ledger, params: Params, seed: bytes, keys: list[bytes], genesis_key: KeyPair) -> Chain:
        if ledger.height():
            raise LedgerError("ledger already holds blocks; open it instead")
        if not keys or genesis_key.public != keys[0]:
            raise MalformedError("genesis must be signed by participant 0 (the genesis model owner)")
        state = initialize_state(params, seed, keys)
        body = {
            "protocol": PROTOCOL_ID,
            "params": params.to_dict(),
            "seed": seed.hex(),
            "keys": [k.hex() for k in keys],
        }
        header = canonical(
            {
                "height": 0,
                "prev": ZERO_HASH.hex(),
                "round": 0,
                "kind": "genesis",
                "miner": 0,
                "body": sha256(canonical(body)).hex(),
                "state_root": compute_state_root(state).hex(),
            }
        )
        block_hash = sha256(header)
        stored = StoredBlock(0, block_hash, header, canonical(body), genesis_key.sign(block_hash))
        ledger.append(stored)
        return cls(ledger, state, block_hash, block_hash)

    @staticmethod
    def _genesis_state(stored: StoredBlock) -> State:
        header = _check_envelope(stored, 0, ZERO_HASH)
        if header.get("kind") != "genesis":
            raise MalformedError("block 0 is not a genesis block")
        if set(header) != GENESIS_HEADER or any(type(header[f]) is not int or header[f] for f in ("round", "miner")):
            raise MalformedError(f"genesis header must have exactly the fields {', '.join(sorted(GENESIS_HEADER))}")
        try:
            body = jsonsafe.loads(stored.body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise MalformedError(f"genesis body is not JSON ({type(exc).__name__})") from exc
        if not isinstance(body, dict) or set(body) != {"protocol", "params", "seed", "keys"}:
            raise MalformedError("genesis body must have exactly the fields keys, params, protocol, seed")
        if body["protocol"] != PROTOCOL_ID:
            raise MalformedError(f"genesis: protocol {str(body['protocol'])[:40]!r}, this software reads {PROTOCOL_ID}")
        if not isinstance(body["params"], dict) or not isinstance(body["keys"], list):
            raise MalformedError("genesis: params must be an object and keys a list")
        params = Params.from_dict(body["params"])
        if set(body["params"]) != set(params.to_dict()):
            raise MalformedError("genesis: params must name every protocol parameter, and nothing else")
        if not all(isinstance(k, str) for k in body["keys"]) or not isinstance(body["seed"], str):
            raise MalformedError("genesis: keys and seed must be hex strings")
        keys = [bytes.fromhex(k) for k in body["keys"]]
        state = initialize_state(params, bytes.fromhex(body["seed"]), keys)
        _check_signature(stored, keys[0])
        _check_root(header, state)
        return state

    # ------------------------------------------------------------ replay

    @classmethod
    def open(cls, ledger: Ledger, on_block: OnBlock | None = None) -> Chain:
        """Replay and verify every stored block; raise at the first bad one. Checks links,
        hashes, signatures, the rules, the state root and ``minted - burned = balances +
        escrow`` at every block."""
        chain = cls.start(ledger, on_block)
        chain.catch_up(1, on_block)
        return chain

    @classmethod
    def start(cls, ledger: Ledger, on_block: OnBlock | None = None) -> Chain:
        """The chain at its verified genesis block, nothing after it applied yet."""
        if ledger.height() == 0:
            raise ChainIntegrityError(0, "empty chain: no genesis block")
        genesis = ledger.get(0)
        try:
            state = cls._genesis_state(genesis)
        except (DerelaylError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ChainIntegrityError(0, _reason(exc)) from exc
        chain = cls(ledger, state, genesis.hash, genesis.hash)
        if on_block:
            on_block(genesis, None, None, state)
        return chain

    def catch_up(self, start: int, on_block: OnBlock | None = None, limit: int | None = None) -> int:
        """Verify and apply the stored blocks from height ``start`` on, at most ``limit`` of
        them (a reader following a chain that another process writes calls it again with what
        it returned); the height reached. Raises at the first bad block, with every block
        before it applied."""
        end = self.ledger.height() if limit is None else min(self.ledger.height(), start + limit)
        for height in range(start, end):
            try:
                stored = self.ledger.get(height)
                block, receipt = self._apply(self.state, stored, height)
            except (DerelaylError, ValueError, KeyError, TypeError, RecursionError, OverflowError) as exc:
                raise ChainIntegrityError(height, _reason(exc)) from exc
            self.head_hash = stored.hash
            if on_block:
                on_block(stored, block, receipt, self.state)
        return max(start, end)

    def _apply(self, state: State, stored: StoredBlock, height: int) -> tuple[Block, Receipt]:
        """Verify a stored block against ``state`` and apply it (mutates ``state``)."""
        raw = _check_envelope(stored, height, self.head_hash)
        header = decode_header(raw, state.n_participants)
        _check_signature(stored, state.keys[header["miner"]])
        try:
            body = jsonsafe.loads(stored.body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise MalformedError(f"body is not JSON ({type(exc).__name__})") from exc
        block = decode_block(header, body, self.chain_id, state.keys)
        receipt = process_block(state, block)
        _check_root(raw, state)
        supply, held = total_money(state)
        if supply != held:
            raise ProtocolError(f"rule violation: minted - burned = {supply} but balances + escrow = {held}")
        return block, receipt

    # ------------------------------------------------------------ new blocks

    def append(self, stored: StoredBlock) -> Receipt:
        """Check a block made elsewhere and store it. Invalid: raises, nothing changes."""
        candidate = self.state.copy()
        try:
            _, receipt = self._apply(candidate, stored, self.ledger.height())
        except (ValueError, KeyError, TypeError, RecursionError, OverflowError) as exc:
            raise MalformedError(f"block {self.ledger.height()}: {type(exc).__name__}: {str(exc)[:120]}") from exc
        self.ledger.append(stored)
        self.state, self.head_hash = candidate, stored.hash
        return receipt

    def seal(self, proposal: Proposal, miner: KeyPair, randomness: bytes = b"") -> StoredBlock:
        """The stored form of a miner's proposal on this chain: time = its height, the given
        randomness (a local chain has none of its own), the miner's signature. Raises if the
        rules reject it; changes nothing."""
        block = dataclasses.replace(proposal.block, time=self.ledger.height(), randomness=randomness)
        candidate = self.state.copy()
        process_block(candidate, block)
        body = encode_block(Proposal(block, proposal.signatures))
        return seal(
            block,
            body,
            height=self.ledger.height(),
            prev=self.head_hash,
            state_root=compute_state_root(candidate),
            miner=miner,
        )

    def submit(self, proposal: Proposal, miner: KeyPair, randomness: bytes = b"") -> Receipt:
        """Seal a miner's proposal and append it with every check a verifier makes."""
        return self.append(self.seal(proposal, miner, randomness))

    def produce(
        self,
        block: Block,
        keys: Mapping[int, KeyPair],
        *,
        join_keys: Mapping[bytes, KeyPair] | None = None,
        randomness: bytes = b"",
    ) -> Receipt:
        """Sign every message with its sender's key, then ``submit``: for tests and tools that
        hold all keys. Participants of a network never do (see ``derelayl.agents``)."""
        proposal = proposal_of(block, self.chain_id, keys, join_keys or {})
        return self.submit(proposal, keys[block.miner], randomness)


def _check_envelope(stored: StoredBlock, height: int, prev: bytes) -> dict[str, Any]:
    if sha256(stored.header) != stored.hash:
        raise ChainIntegrityError(stored.height, "tampered bytes: header does not hash to the block hash")
    header = parse_header(stored)
    if type(header.get("height")) is not int or header["height"] != stored.height or stored.height != height:
        raise ChainIntegrityError(stored.height, f"broken link: expected height {height}")
    if header.get("prev") != prev.hex():
        raise ChainIntegrityError(stored.height, "broken link: prev does not name the previous block's hash")
    if header.get("body") != sha256(stored.body).hex():
        raise ChainIntegrityError(stored.height, "tampered bytes: body does not match the header's body hash")
    return header


def _check_signature(stored: StoredBlock, key: bytes) -> None:
    if not verify_signature(key, stored.signature, stored.hash):
        raise SignatureError("block not signed by its miner")


def _check_root(header: dict[str, Any], state: State) -> None:
    if header.get("state_root") != compute_state_root(state).hex():
        raise ProtocolError("rule violation: state root after this block differs from the header's")


def _reason(exc: Exception) -> str:
    if isinstance(exc, ChainIntegrityError):
        return exc.reason
    if isinstance(exc, SignatureError):
        return f"bad signature: {exc}"
    if isinstance(exc, MalformedError):
        return f"malformed block: {exc}"
    if isinstance(exc, ProtocolError):
        text = str(exc)
        return text if text.startswith("rule violation") else f"rule violation: {text}"
    return f"malformed block: {exc}"
