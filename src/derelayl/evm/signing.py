"""Participant messages signed for the contract: secp256k1 over an EIP-191 hash.

A message hash is ``keccak256(abi.encode(domain, tag, round, fields...))`` with
``domain = keccak256(abi.encode(keccak256("derelayl/2"), chain id, contract address))``, so a
message replayed on another chain or contract, or in another round, does not verify. The hash
is signed as an Ethereum signed message (``"\\x19Ethereum Signed Message:\\n32" + hash``), so
any wallet can sign it. ``contracts/DeRelayL.vy`` computes the same bytes and ``ecrecover``s.

A participant's 32-byte key on the ledger is its 20-byte address left-padded with zeros (the
EVM's own word layout).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import coincurve
from eth_abi import encode
from eth_utils import keccak

from derelayl.errors import ConfigError, MalformedError
from derelayl.protocol.messages import BidMessage, CasesMessage, CommitMessage, Message, ScoresMessage

__all__ = [
    "EvmKey",
    "EvmSigner",
    "address_of_key",
    "compute_domain",
    "derive_evm_keys",
    "key_of_address",
    "message_hash",
    "recover",
]

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
TAG_BID = keccak(b"derelayl/bid")
TAG_COMMIT = keccak(b"derelayl/commit")
TAG_SCORES = keccak(b"derelayl/scores")
TAG_JOIN = keccak(b"derelayl/join")
TAG_CASES = keccak(b"derelayl/cases")
_PREFIX = b"\x19Ethereum Signed Message:\n32"
_ROLE = {"trainer": 0, "model_owner": 1}


def compute_domain(chain_id: int, contract: str) -> bytes:
    return keccak(encode(["bytes32", "uint256", "address"], [keccak(b"derelayl/2"), chain_id, contract]))


def key_of_address(address: str | bytes) -> bytes:
    raw = bytes.fromhex(address.removeprefix("0x")) if isinstance(address, str) else address
    if len(raw) != 20:
        raise MalformedError(f"an address is 20 bytes, got {len(raw)}")
    return bytes(12) + raw


def address_of_key(key: bytes) -> str:
    """The checksummed address a 32-byte ledger key stands for; a key that is not a padded
    address has no place on the EVM."""
    from eth_utils import to_checksum_address

    if len(key) != 32 or key[:12] != bytes(12):
        raise MalformedError(f"key {key.hex()[:16]}… is not an Ethereum address (12 zero bytes + 20)")
    return str(to_checksum_address(key[12:]))


def message_hash(domain: bytes, message: Message) -> bytes:
    """The hash a participant signs; ``MalformedError`` for fields the ABI cannot carry."""
    try:
        return _message_hash(domain, message)
    except MalformedError:
        raise
    except Exception as exc:  # eth_abi's encoding errors are not ValueErrors
        raise MalformedError(f"{type(message).__name__} cannot be encoded for the contract ({exc})") from exc


def _message_hash(domain: bytes, message: Message) -> bytes:
    if isinstance(message, BidMessage):
        types, values = ["uint256", "uint256", "uint256"], [message.round, _ROLE[message.role], message.amount]
        tag = TAG_BID
    elif isinstance(message, CommitMessage):
        types, values, tag = ["uint256", "bytes32"], [message.round, message.digest], TAG_COMMIT
    elif isinstance(message, CasesMessage):
        types, values, tag = ["uint256", "bytes32"], [message.round, message.digest], TAG_CASES
    elif isinstance(message, ScoresMessage):
        scores = keccak(encode(["int64[]"], [[int(s) for s in message.scores]]))
        types, values = ["uint256", "bytes32", "bytes32"], [message.round, message.test_cases_digest, scores]
        tag = TAG_SCORES
    else:
        types, values, tag = ["address"], [address_of_key(message.key)], TAG_JOIN
    return keccak(encode(["bytes32", "bytes32", *types], [domain, tag, *values]))


def _signed_hash(domain: bytes, message: Message) -> bytes:
    return keccak(_PREFIX + message_hash(domain, message))


@dataclass(frozen=True)
class EvmKey:
    """A secp256k1 private key and its Ethereum address."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != 32 or not 0 < int.from_bytes(self.secret, "big") < SECP256K1_N:
            raise ConfigError("an Ethereum private key is a 32-byte number in [1, n)")

    @property
    def address(self) -> str:
        return _address(self.secret)

    @property
    def public(self) -> bytes:
        return key_of_address(self.address)

    def sign_hash(self, digest: bytes) -> bytes:
        """65 bytes r || s || v (v = 27 or 28)."""
        sig = _private(self.secret).sign_recoverable(digest, hasher=None)
        return sig[:64] + bytes([sig[64] + 27])


@lru_cache(maxsize=1 << 12)
def _private(secret: bytes) -> coincurve.PrivateKey:
    return coincurve.PrivateKey(secret)


@lru_cache(maxsize=1 << 12)
def _address(secret: bytes) -> str:
    from eth_utils import to_checksum_address

    public = _private(secret).public_key.format(compressed=False)[1:]
    return str(to_checksum_address(keccak(public)[-20:]))


def recover(digest: bytes, signature: bytes) -> bytes | None:
    """The 20-byte address that signed ``digest``, or None for a malformed signature."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        return None
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([signature[64] - 27]), digest, hasher=None
        )
    except (ValueError, TypeError):
        return None
    return bytes(keccak(public.format(compressed=False)[1:])[-20:])


@dataclass(frozen=True)
class EvmSigner:
    """A participant's identity on one contract (``agents.agent.Signer``)."""

    key: EvmKey
    domain: bytes

    @property
    def public(self) -> bytes:
        return self.key.public

    @property
    def address(self) -> str:
        return self.key.address

    def sign(self, message: Message) -> bytes:
        return self.key.sign_hash(_signed_hash(self.domain, message))

    def verify(self, public: bytes, message: Message, signature: bytes) -> bool:
        try:
            signer = recover(_signed_hash(self.domain, message), signature)
        except MalformedError:
            return False
        return signer is not None and bytes(12) + signer == public


def derive_evm_keys(seed: int | str, count: int, start: int = 0) -> list[EvmKey]:
    """Deterministic keys for a local network (never for real funds): key i from (seed, i)."""
    keys = []
    for i in range(start, start + count):
        counter = 0
        while True:  # a SHA-256 output is a valid key but for a ~2**-128 chance
            secret = hashlib.sha256(f"derelayl-evm-key/{seed}/{i}/{counter}".encode()).digest()
            if 0 < int.from_bytes(secret, "big") < SECP256K1_N:
                break
            counter += 1
        keys.append(EvmKey(secret))
    return keys
