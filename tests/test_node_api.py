"""A node's HTTP API fed bad input, on a real server on loopback (uvicorn, httpx; no mocks).

One chain (anvil) and one ``Node`` for participant 0 serve the whole module. The other seven
participants' keys live in the test: their agents (the abstract model) produce honest blocks
through a second ``ContractClient`` when a test needs round 0 in a later phase, so the
entitlements the node checks are the chain's own. Tests that need a phase call
``net.reach(phase)``; the file's order is deposit -> commit -> test.

Every refusal must be a 4xx with ``{"error": "<reason>"}``, leave the node's inbox (or its
used fetch nonces) exactly as it was, and leave the server answering ``/status``. The
decoders of ``wire.py`` are fuzzed without a server (they run without anvil too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derelayl.agents import Agent, LatentBrain
from derelayl.errors import MalformedError
from derelayl.evm.client import ContractClient
from derelayl.evm.node import Node as EvmNode
from derelayl.evm.node import anvil_path
from derelayl.evm.signing import EvmKey, EvmSigner, compute_domain, derive_evm_keys
from derelayl.learning.data import case_digest, cases_from_blob
from derelayl.learning.latent import LatentTrainer
from derelayl.node.api import MAX_BODY, make_app
from derelayl.node.core import Node
from derelayl.node.runner import DataSpec
from derelayl.node.wire import MAX_SCORES, FetchRequest, message_from_json, message_to_json
from derelayl.protocol.messages import (
    BidMessage,
    CasesMessage,
    CommitMessage,
    JoinMessage,
    Message,
    ScoresMessage,
    Signed,
)
from derelayl.protocol.state import State
from derelayl.protocol.types import Phase
from derelayl.runtime.driver import RoundDriver
from served import node_on_anvil, serve

N, SEED = 8, 42
SPEC = DataSpec(0, N, SEED)
FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


# ---------------------------------------------------------------- the network


@dataclass
class Net:
    chain: EvmNode
    keys: list[EvmKey]
    client: ContractClient
    """The other participants' view of the contract (the node has its own)."""
    driver: RoundDriver
    node: Node
    http: httpx.Client

    @property
    def state(self) -> State:
        return self.client.state

    def signer(self, who: int | EvmKey) -> EvmSigner:
        key = self.keys[who] if isinstance(who, int) else who
        return EvmSigner(key, self.client.history.domain)

    def signed(self, message: Message, by: int | EvmKey) -> dict[str, Any]:
        return dict(message_to_json(Signed(message, self.signer(by).sign(message))))

    def reach(self, phase: Phase) -> State:
        """Round 0 played up to ``phase`` with honest blocks; the node synced to it."""
        while self.state.round == 0 and self.state.phase < phase:
            self.driver.step()
        assert (self.state.round, self.state.phase) == (0, phase), "a test needing an earlier phase ran after this"
        self.node.sync()
        return self.state

    def inbox(self) -> dict[int, dict[Any, int]]:
        return {r: {slot: id(s) for slot, s in box.items()} for r, box in self.node.inbox.items()}

    def nonces(self) -> dict[int, frozenset[bytes]]:
        return {r: frozenset(used) for r, used in self.node.used_nonces.items()}

    def genesis(self) -> bytes:
        """The genesis model's digest, as the contract recorded it."""
        return bytes(self.client.contract.functions.genesis_model().call())


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    if anvil_path() is None:
        pytest.skip("needs anvil (scripts/setup with npm)")
    with contextlib.ExitStack() as stack:
        chain, keys, client, node = node_on_anvil(stack, "node-api", SPEC, SEED, tmp_path_factory.mktemp("node0"))
        node.brain.shard.owner = 0
        http = serve(stack, make_app(node))
        agents = [Agent(client.signer(k), LatentBrain(LatentTrainer(seed=1))) for k in keys]
        yield Net(chain, keys, client, RoundDriver(client, agents), node, http)


def _assert_refused(answer: httpx.Response, status: int, reason: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert reason in body["error"], body["error"]
    assert "Traceback" not in answer.text


def _assert_serving(net: Net) -> None:
    assert net.http.get("/status").status_code == 200


def _assert_no_5xx(answer: httpx.Response) -> None:
    assert answer.status_code < 500, answer.text
    assert "Traceback" not in answer.text


def _assert_answered(answer: httpx.Response) -> None:
    """``POST /messages``: 202 and a result, or a 4xx and one reason."""
    _assert_no_5xx(answer)
    assert answer.status_code in (202, 400, 403, 409), answer.text
    assert set(answer.json()) == ({"result"} if answer.status_code == 202 else {"error"}), answer.text


# ---------------------------------------------------------------- POST /messages


def _bid(net: Net, who: int = 4, **fields: Any) -> dict[str, Any]:
    """Participant ``who``'s correctly signed trainer bid for round 0, then ``fields`` replaced."""
    return {**net.signed(BidMessage(0, who, "trainer", 5), who), **fields}


def _commit(net: Net, signed_digest: bytes, who: int = 5, **fields: Any) -> dict[str, Any]:
    return {**net.signed(CommitMessage(0, who, signed_digest), who), **fields}


def _scores(net: Net, signed_scores: list[int], who: int = 6, **fields: Any) -> dict[str, Any]:
    message = ScoresMessage(0, who, bytes(32), np.array(signed_scores, dtype=np.int64))
    return {**net.signed(message, who), **fields}


def _json(build: Callable[[Net], Any]) -> Callable[[Net], bytes]:
    return lambda net: json.dumps(build(net)).encode()


def _text(build: Callable[[Net], Any], old: str, new: str) -> Callable[[Net], bytes]:
    """JSON no encoder writes (NaN, a 5000-digit number): a valid body with text replaced."""
    return lambda net: json.dumps(build(net)).replace(old, new).encode()


def _without(data: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != name}


MALFORMED = [
    pytest.param(lambda net: b"{not json", "not JSON", id="not-json"),
    pytest.param(lambda net: b"", "not JSON", id="empty"),
    pytest.param(lambda net: b"\xff\xfe\x00{", "not JSON", id="not-utf8"),
    # as deep as 64 KiB allows: "not JSON" under Python's default recursion limit, a list (not
    # a message) under the 100000 that py_ecc sets when it is imported; never a crash
    pytest.param(lambda net: b"[" * 32_000 + b"]" * 32_000, "", id="nested-32000-deep"),
    pytest.param(_json(lambda net: [_bid(net)]), "kind is bid", id="a-list"),
    pytest.param(_json(lambda net: None), "kind is bid", id="null"),
    pytest.param(_json(lambda net: _bid(net, kind="vote")), "kind is bid", id="unknown-kind"),
    pytest.param(_json(lambda net: _bid(net, kind=["bid"])), "kind is bid", id="kind-a-list"),
    pytest.param(_json(lambda net: _bid(net, kind={"bid": 1})), "kind is bid", id="kind-an-object"),
    pytest.param(_json(lambda net: _bid(net, extra=1)), "exactly the fields", id="extra-field"),
    pytest.param(_json(lambda net: _without(_bid(net), "amount")), "exactly the fields", id="missing-field"),
    pytest.param(_json(lambda net: _bid(net, round=True)), "round", id="round-a-bool"),
    pytest.param(_json(lambda net: _bid(net, round=0.0)), "round", id="round-a-float"),
    pytest.param(_json(lambda net: _bid(net, round="0")), "round", id="round-a-string"),
    pytest.param(_json(lambda net: _bid(net, round=-1)), "round", id="negative-round"),
    pytest.param(_text(_bid, '"round": 0', '"round": NaN'), "round", id="round-nan"),
    pytest.param(_json(lambda net: _bid(net, participant=2**32 + 1)), "participant", id="participant-too-big"),
    pytest.param(_json(lambda net: _bid(net, amount=2**63)), "amount", id="amount-beyond-int64"),
    pytest.param(_json(lambda net: _bid(net, amount=-1)), "amount", id="negative-amount"),
    pytest.param(_text(_bid, '"amount": 5', '"amount": ' + "9" * 5000), "not JSON", id="amount-5000-digits"),
    pytest.param(_json(lambda net: _bid(net, role="miner")), "role", id="unknown-role"),
    pytest.param(_json(lambda net: _bid(net, role=["trainer"])), "role", id="role-a-list"),
    pytest.param(_json(lambda net: _bid(net, signature="ab" * 64)), "signature", id="signature-64-bytes"),
    pytest.param(_json(lambda net: _bid(net, signature="zz" * 65)), "signature", id="signature-not-hex"),
    pytest.param(_json(lambda net: _commit(net, bytes(32), digest="00" * 31)), "digest", id="digest-31-bytes"),
    pytest.param(_json(lambda net: _commit(net, bytes(32), digest="0g" * 32)), "digest", id="digest-not-hex"),
    # correctly signed, for a 31-byte digest spelled in 64 characters (fromhex skips spaces)
    pytest.param(_json(lambda net: _commit(net, b"\xaa" * 31, digest="aa" * 31 + "  ")), "digest", id="digest-spaces"),
    pytest.param(_json(lambda net: _scores(net, [1] * (MAX_SCORES + 1))), "scores", id="513-scores"),
    pytest.param(_json(lambda net: _scores(net, [1], scores=[True])), "score", id="score-a-bool"),
    pytest.param(_json(lambda net: _scores(net, [1], scores=[2**63])), "score", id="score-beyond-int64"),
    pytest.param(_json(lambda net: _scores(net, [1], scores={"0": 1})), "scores", id="scores-an-object"),
    pytest.param(_json(lambda net: {"kind": "join", "key": "00" * 32, "signature": 5}), "signature", id="join-sig-int"),
]


@pytest.mark.parametrize(("body", "reason"), MALFORMED)
def test_a_malformed_message_is_refused_with_400(net: Net, body: Callable[[Net], bytes], reason: str) -> None:
    # Prepare
    content, before = body(net), net.inbox()
    # Execute
    answer = net.http.post("/messages", content=content, headers={"content-type": "application/json"})
    # Assert
    _assert_refused(answer, 400, reason)
    assert net.inbox() == before
    _assert_serving(net)


def _flipped(signature: str) -> str:
    raw = bytearray.fromhex(signature)
    raw[40] ^= 1  # a bit of s: still a well-formed signature, of someone else
    return raw.hex()


def _other_contract(net: Net) -> dict[str, Any]:
    message = BidMessage(0, 4, "trainer", 5)
    elsewhere = EvmSigner(net.keys[4], compute_domain(net.chain.chain_id, "0x" + "11" * 20))
    return message_to_json(Signed(message, elsewhere.sign(message)))


REFUSED = [
    pytest.param(
        lambda net: _bid(net, signature=_flipped(_bid(net)["signature"])), 403, "does not verify", id="bad-sig"
    ),
    pytest.param(lambda net: net.signed(BidMessage(0, 4, "trainer", 5), 3), 403, "does not verify", id="signed-by-3"),
    pytest.param(
        lambda net: net.signed(BidMessage(0, 4, "trainer", 5), derive_evm_keys("x", 1)[0]), 403, "verify", id="stranger"
    ),
    pytest.param(_other_contract, 403, "does not verify", id="signed-for-another-contract"),
    pytest.param(lambda net: _bid(net, amount=6), 403, "does not verify", id="amount-changed"),
    pytest.param(
        lambda net: {"kind": "join", "key": "ff" * 32, "signature": "00" * 65}, 403, "verify", id="join-no-address"
    ),
    pytest.param(lambda net: net.signed(BidMessage(5, 4, "trainer", 5), 4), 409, "round 5", id="wrong-round"),
    pytest.param(lambda net: net.signed(BidMessage(0, N, "trainer", 5), 4), 409, "not registered", id="unknown-sender"),
]


@pytest.mark.parametrize(("body", "status", "reason"), REFUSED)
def test_a_message_not_signed_by_its_sender_now_is_refused(
    net: Net, body: Callable[[Net], dict[str, Any]], status: int, reason: str
) -> None:
    # Prepare
    content, before = body(net), net.inbox()
    # Execute
    answer = net.http.post("/messages", json=content)
    # Assert
    _assert_refused(answer, status, reason)
    assert net.inbox() == before
    _assert_serving(net)


def test_a_valid_bid_is_kept_once_and_a_replay_or_rebid_is_refused(net: Net) -> None:
    # Prepare
    bid, rebid = net.signed(BidMessage(0, 2, "trainer", 7), 2), net.signed(BidMessage(0, 2, "trainer", 8), 2)
    before = net.inbox()
    # Execute
    first = net.http.post("/messages", json=bid)
    kept = net.inbox()
    replay = net.http.post("/messages", json=bid)
    second = net.http.post("/messages", json=rebid)
    # Assert: the first copy is kept, the later ones refused and not stored
    assert first.status_code == 202 and first.json() == {"result": "accepted"}
    new = {(r, slot) for r, box in kept.items() for slot in box} - {(r, s) for r, box in before.items() for s in box}
    assert new == {(0, (BidMessage, 2, "trainer"))}
    assert message_to_json(net.node.inbox[0][(BidMessage, 2, "trainer")]) == bid
    _assert_refused(replay, 409, "already received")
    _assert_refused(second, 409, "already received")
    assert net.inbox() == kept
    _assert_serving(net)


def _padded(net: Net, who: int, size: int) -> bytes:
    """A correctly signed bid, padded with spaces inside the object to ``size`` bytes."""
    body = json.dumps(net.signed(BidMessage(0, who, "model_owner", 1), who)).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_message_is_refused_with_413(net: Net, chunked: bool) -> None:
    # Prepare: the same bid at the limit (a control) and one byte over it
    who = 6 if chunked else 1
    at_limit, over = _padded(net, who, MAX_BODY), _padded(net, who, MAX_BODY + 1)

    def send(content: bytes) -> httpx.Response:
        if chunked:  # no Content-Length: the server has to count while it reads
            return net.http.post(
                "/messages", content=iter([content[i : i + 8192] for i in range(0, len(content), 8192)])
            )
        return net.http.post("/messages", content=content)

    before = net.inbox()
    # Execute
    refused = send(over)
    after_refusal = net.inbox()
    accepted = send(at_limit)
    # Assert
    assert ("content-length" in refused.request.headers) is not chunked
    _assert_refused(refused, 413, f"at most {MAX_BODY} bytes")
    assert after_refusal == before
    assert accepted.status_code == 202, accepted.text
    _assert_serving(net)


# ---------------------------------------------------------------- GET /models/<digest>


def _request(net: Net, who: int | EvmKey, digest: bytes | None = None, round_index: int = 0) -> dict[str, str]:
    return FetchRequest.make(net.signer(who), round_index, digest or net.genesis()).headers()


def _fetch(net: Net, digest: str, headers: dict[str, Any] | None) -> httpx.Response:
    return net.http.get(f"/models/{quote(digest, safe='')}", headers=headers)


MALFORMED_FETCH = [
    pytest.param("abc", {}, "digest", id="digest-short"),
    pytest.param("0g" * 32, {}, "digest", id="digest-not-hex"),
    pytest.param("aa" * 31 + "  ", {}, "digest", id="digest-spaces"),
    pytest.param(None, None, "X-Round", id="no-headers"),
    pytest.param(None, {"X-Round": "abc"}, "X-Round", id="round-text"),
    pytest.param(None, {"X-Round": "-1"}, "X-Round", id="round-negative"),
    pytest.param(None, {"X-Round": "1.5"}, "X-Round", id="round-float"),
    pytest.param(None, {"X-Round": "9" * 13}, "X-Round", id="round-13-digits"),
    pytest.param(None, {"X-Round": b"\xb2"}, "X-Round", id="round-superscript-two"),
    pytest.param(None, {"X-Nonce": "zz" * 32}, "nonce", id="nonce-not-hex"),
    pytest.param(None, {"X-Nonce": "00" * 31}, "nonce", id="nonce-31-bytes"),
    pytest.param(None, {"X-Nonce": "00" * 15 + "  " + "00" * 16}, "nonce", id="nonce-spaces"),
    pytest.param(None, {"X-Signature": "zz" * 65}, "signature", id="signature-not-hex"),
    pytest.param(None, {"X-Signature": "00" * 64}, "signature", id="signature-64-bytes"),
]


@pytest.mark.parametrize(("digest", "override", "reason"), MALFORMED_FETCH)
def test_a_malformed_model_request_is_refused_with_400(
    net: Net, digest: str | None, override: dict[str, Any] | None, reason: str
) -> None:
    # Prepare: participant 2's request for the genesis model, one part spoiled
    headers = None if override is None else {**_request(net, 2), **override}
    before = net.nonces()
    # Execute
    answer = _fetch(net, digest or net.genesis().hex(), headers)
    # Assert
    _assert_refused(answer, 400, reason)
    assert net.nonces() == before
    _assert_serving(net)


def _matched_trainer(state: State) -> int:
    return int(state.pairs.trainer[state.pairs.model_owner == 0][0])


def _miner(state: State) -> int:
    assert state.roles is not None
    return int(state.roles.miners[0])


def _resigned(net: Net, who: int, signature: bytes) -> dict[str, str]:
    return {**_request(net, who), "X-Signature": signature.hex()}


def _for_other_digest(net: Net, who: int) -> dict[str, str]:
    return _request(net, who, digest=hashlib.sha256(b"another model").digest())


REFUSED_FETCH = [
    pytest.param(
        lambda net, s: _resigned(net, _matched_trainer(s), bytes(64) + b"\x1b"), 403, "does not verify", id="sig-zero"
    ),
    pytest.param(
        lambda net, s: _resigned(net, _matched_trainer(s), b"\x01" * 64 + b"\x1d"), 403, "does not verify", id="sig-v29"
    ),
    pytest.param(lambda net, s: _request(net, _miner(s)), 403, "does not entitle", id="miner-asks-for-parent"),
    pytest.param(lambda net, s: _request(net, derive_evm_keys("x", 1)[0]), 403, "does not entitle", id="stranger"),
    pytest.param(
        lambda net, s: _for_other_digest(net, _matched_trainer(s)), 403, "does not entitle", id="signed-other-digest"
    ),
    pytest.param(lambda net, s: _request(net, _matched_trainer(s), round_index=1), 409, "round 1", id="wrong-round"),
]


@pytest.mark.parametrize(("headers", "status", "reason"), REFUSED_FETCH)
def test_a_model_request_the_chain_does_not_allow_is_refused(
    net: Net, headers: Callable[[Net, State], dict[str, str]], status: int, reason: str
) -> None:
    # Prepare: the deposit block has paired trainers with participant 0's genesis model
    state = net.reach(Phase.COMMIT)
    spoiled, before = headers(net, state), net.nonces()
    # Execute
    answer = _fetch(net, net.genesis().hex(), spoiled)
    # Assert
    _assert_refused(answer, status, reason)
    assert net.nonces() == before
    _assert_serving(net)


def test_a_matched_trainer_gets_the_genesis_model_once_per_nonce(net: Net) -> None:
    # Prepare
    state = net.reach(Phase.COMMIT)
    trainer, genesis = _matched_trainer(state), net.genesis()
    request, fresh = _request(net, trainer), _request(net, trainer)
    # Execute
    answer = _fetch(net, genesis.hex(), request)
    replay = _fetch(net, genesis.hex(), request)
    again = _fetch(net, genesis.hex(), fresh)
    # Assert: the bytes are the model the contract names; a nonce serves once
    assert answer.status_code == 200, answer.text
    assert hashlib.sha256(answer.content).digest() == genesis
    _assert_refused(replay, 403, "replayed")
    assert again.status_code == 200 and again.content == answer.content


def test_a_model_the_node_does_not_hold_is_404(net: Net) -> None:
    # Prepare: after the commit block a tester may fetch every committed model, which this
    # node (participant 0, no trainer) does not hold
    state = net.reach(Phase.TEST)
    assert state.roles is not None
    tester, digest = int(state.roles.testers[0]), state.commitments[0]
    assert not net.node.models.store.has(digest)
    before = net.nonces()
    # Execute
    answer = _fetch(net, digest.hex(), _request(net, tester, digest=digest))
    # Assert
    _assert_refused(answer, 404, "does not hold")
    assert net.nonces() == before
    _assert_serving(net)


def test_once_the_test_phase_times_out_anyone_may_fetch_the_committed_models(net: Net) -> None:
    """A volunteer producing a silent testing miner's block scores the models itself: after
    the phase deadline on chain, the entitlement extends from the testers to everyone."""
    # Prepare: a participant that is not a tester asks for a committed model
    state = net.reach(Phase.TEST)
    assert state.roles is not None and state.params.phase_timeout is not None
    outsider = next(i for i in range(1, N) if i not in set(state.roles.testers.tolist()))
    digest = state.commitments[0]
    before = _fetch(net, digest.hex(), _request(net, outsider, digest=digest))
    # Execute: the chain passes the phase's deadline with nobody producing the test block
    for _ in range(state.phase_start + state.params.phase_timeout - net.chain.block_number()):
        net.chain.w3.provider.make_request("evm_mine", [])
    net.node.sync()
    after = _fetch(net, digest.hex(), _request(net, outsider, digest=digest))
    # Assert: refused before the deadline; past it the entitlement check passes (this node
    # does not hold the model, so the answer is 404, not 403)
    _assert_refused(before, 403, "does not entitle")
    _assert_refused(after, 404, "does not hold")
    _assert_serving(net)


# ---------------------------------------------------------------- GET /cases/<digest>


@pytest.mark.parametrize("digest", ["xyz", "ab" * 31, "0g" * 32, "aa" * 31 + "  ", "ab" * 33])
def test_a_malformed_cases_digest_is_400(net: Net, digest: str) -> None:
    # Execute
    answer = net.http.get(f"/cases/{quote(digest, safe='')}")
    # Assert
    _assert_refused(answer, 400, "digest")
    _assert_serving(net)


def test_unpublished_cases_are_404_and_published_ones_are_their_bytes(net: Net) -> None:
    # Prepare: the node publishes test cases drawn from its own shard, as it does when it scores
    x, y = net.node.brain.shard.draw_test_cases(0, 20, 7)
    digest = case_digest(x, y)
    unknown = hashlib.sha256(b"never published").digest()
    assert net.node.brain.on_cases is not None
    # Execute
    before = net.http.get(f"/cases/{digest.hex()}")
    net.node.brain.on_cases(x, y)
    after = net.http.get(f"/cases/{digest.hex()}")
    missing = net.http.get(f"/cases/{unknown.hex()}")
    # Assert
    _assert_refused(before, 404, "no published test cases")
    _assert_refused(missing, 404, "no published test cases")
    assert after.status_code == 200
    assert hashlib.sha256(after.content).digest() == digest
    got_x, got_y = cases_from_blob(after.content)
    assert np.array_equal(got_x, x) and np.array_equal(got_y, y)


@pytest.mark.parametrize("round_", ["abc", "-1", "1.5", "99999999999", "%20"])
def test_a_malformed_cases_round_is_400(net: Net, round_: str) -> None:
    _assert_refused(net.http.get(f"/cases/round/{round_}"), 400, "round")
    _assert_serving(net)


def test_a_rounds_cases_are_not_served_before_its_commit_block(net: Net) -> None:
    # Execute: a later round (and this one, if the node is before its test phase)
    view = net.node.view
    later = net.http.get(f"/cases/round/{view.round + 5}")
    now = net.http.get(f"/cases/round/{view.round}") if view.phase < Phase.TEST else None
    # Assert: "try again" (425), nothing published for them
    _assert_refused(later, 425, "after its commit block")
    if now is not None:
        _assert_refused(now, 425, "after its commit block")
        assert not (net.node.home / "cases" / f"round-{view.round}").exists()
    assert not (net.node.home / "cases" / f"round-{view.round + 5}").exists()


# ---------------------------------------------------------------- POST /peers


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"{", '{"url"', id="not-json"),
        pytest.param(b"[]", '{"url"', id="a-list"),
        pytest.param(b'"http://127.0.0.1:1"', '{"url"', id="a-string"),
        pytest.param(b"{}", '{"url"', id="no-url"),
        pytest.param(b'{"url": 5}', "http(s)://host:port", id="url-an-int"),
        pytest.param(b'{"url": "ftp://127.0.0.1:1"}', "http(s)://host:port", id="ftp"),
        pytest.param(b'{"url": "http://127.0.0.1:1/x?y"}', "http(s)://host:port", id="with-path"),
        pytest.param(b'{"url": "http://a b"}', "http(s)://host:port", id="with-space"),
    ],
)
def test_a_malformed_announcement_is_refused_with_400(net: Net, body: bytes, reason: str) -> None:
    # Prepare
    before = list(net.node.peers.urls)
    # Execute
    answer = net.http.post("/peers", content=body)
    # Assert
    _assert_refused(answer, 400, reason)
    assert net.node.peers.urls == before
    _assert_serving(net)


def test_an_announcement_is_added_once(net: Net) -> None:
    # Prepare
    url = "http://127.0.0.9:8799"
    # Execute
    first = net.http.post("/peers", json={"url": url})
    again = net.http.post("/peers", json={"url": url})
    # Assert
    assert (first.status_code, first.json()) == (202, {"result": "added"})
    assert (again.status_code, again.json()) == (202, {"result": "known"})
    assert net.node.peers.urls.count(url) == 1


def _raw_post(net: Net, path: str, declared: int, sent: bytes) -> bytes:
    """A request whose Content-Length promises more than is sent (httpx will not lie)."""
    port = net.http.base_url.port
    assert port is not None
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode() + sent)
        answer = b""
        with contextlib.suppress(TimeoutError):
            while chunk := sock.recv(4096):
                answer += chunk
    return answer


@pytest.mark.parametrize(("path", "limit"), [("/peers", 1024), ("/messages", MAX_BODY)])
def test_an_oversized_body_is_refused_before_it_is_read(net: Net, path: str, limit: int) -> None:
    # Prepare
    before_peers, before_inbox = list(net.node.peers.urls), net.inbox()
    # Execute: one byte over the limit, chunked; and 100 MB promised, 2 KiB sent
    over = net.http.post(path, content=iter([b" " * (limit + 1)]))
    promised = _raw_post(net, path, 100 << 20, b" " * 2048)
    # Assert: refused at once, without waiting for (or keeping) the rest
    _assert_refused(over, 413, f"at most {limit} bytes")
    assert promised.startswith(b"HTTP/1.1 413"), promised[:200]
    assert net.node.peers.urls == before_peers and net.inbox() == before_inbox
    _assert_serving(net)


# ---------------------------------------------------------------- fuzz


SPECIAL = st.sampled_from(
    [
        *(True, False, -1, 0, 2**32, 2**63 - 1, 2**63, -(2**63) - 1, 2**256, 0.5, float("nan"), float("inf")),
        *("", "00" * 32, "00" * 65, "0g" * 32, " " * 64, "aa" * 31 + "  ", "trainer", "model_owner", "bid", "join"),
        *([], {}, [0] * (MAX_SCORES + 1)),
    ]
)
LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=16) | SPECIAL
JSON = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["kind", "round", "participant", "role", "amount", "digest", "scores", "signature", "key", "extra"]
DROP = object()
MUTATIONS = st.lists(st.tuples(st.sampled_from(FIELDS), st.just(DROP) | JSON), min_size=1, max_size=3)
KINDS = st.sampled_from(["bid", "commit", "cases", "scores", "join"])


def _base(kind: str, sign: Callable[[Message], bytes]) -> dict[str, Any]:
    message: Message
    if kind == "bid":
        message = BidMessage(0, 7, "model_owner", 3)
    elif kind == "commit":
        message = CommitMessage(0, 7, b"\x07" * 32)
    elif kind == "cases":
        message = CasesMessage(0, 7, b"\x07" * 32)
    elif kind == "scores":
        message = ScoresMessage(0, 7, b"\x07" * 32, np.arange(3, dtype=np.int64))
    else:
        message = JoinMessage(derive_evm_keys("newcomer", 1)[0].public)
    return message_to_json(Signed(message, sign(message)))


def _mutated(base: dict[str, Any], mutations: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(base)
    for name, value in mutations:
        if value is DROP:
            data.pop(name, None)
        else:
            data[name] = value
    return data


@FUZZ
@given(body=st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
def test_random_bodies_never_get_a_5xx(net: Net, body: bytes) -> None:
    # Prepare
    before = net.inbox()
    # Execute
    answer = net.http.post("/messages", content=body)
    # Assert
    _assert_answered(answer)
    assert answer.status_code == 202 or net.inbox() == before


@FUZZ
@given(kind=KINDS, mutations=MUTATIONS)
def test_mutated_messages_never_get_a_5xx(net: Net, kind: str, mutations: list[tuple[str, Any]]) -> None:
    # Prepare: a correctly signed message of participant 7 (or a newcomer), then mutated
    signer = net.signer(7) if kind != "join" else net.signer(derive_evm_keys("newcomer", 1)[0])
    body, before = _mutated(_base(kind, signer.sign), mutations), net.inbox()
    # Execute
    answer = net.http.post("/messages", content=json.dumps(body).encode())
    # Assert
    _assert_answered(answer)
    assert answer.status_code == 202 or net.inbox() == before


HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=140)
HEADER = HEADER_TEXT.map(lambda s: s.strip(" ").encode("latin-1")) | st.sampled_from(
    [b"0", b"1", b"00" * 32, b"00" * 65, b"\xb2", b"\xb9"]
)


@FUZZ
@given(
    digest=st.text(min_size=1, max_size=80) | st.binary(min_size=32, max_size=32).map(bytes.hex),
    headers=st.fixed_dictionaries({}, optional={"X-Round": HEADER, "X-Nonce": HEADER, "X-Signature": HEADER}),
)
def test_random_model_requests_never_get_a_5xx(net: Net, digest: str, headers: dict[str, bytes]) -> None:
    # Execute
    answer = _fetch(net, digest, headers)
    cases = net.http.get(f"/cases/{quote(digest, safe='')}")
    # Assert
    _assert_no_5xx(answer)
    _assert_no_5xx(cases)


def _decodes_or_is_malformed(decode: Callable[..., Any], *args: Any) -> None:
    """Any exception but ``MalformedError`` propagates and fails the test."""
    try:
        decode(*args)
    except MalformedError:
        pass


@FUZZ
@given(data=JSON | st.tuples(KINDS, MUTATIONS).map(lambda km: _mutated(_base(km[0], lambda m: b"\x01" * 65), km[1])))
def test_message_decoder_raises_only_malformed_error(data: Any) -> None:
    # Execute / Assert
    _decodes_or_is_malformed(message_from_json, data)


@FUZZ
@given(
    digest=st.text(max_size=80),
    headers=st.dictionaries(st.sampled_from(["x-round", "x-nonce", "x-signature"]), st.text(max_size=140)),
)
def test_fetch_parser_raises_only_malformed_error(digest: str, headers: dict[str, str]) -> None:
    # Execute / Assert
    _decodes_or_is_malformed(FetchRequest.parse, digest, headers)


SHAPE = st.integers(-(2**63), 2**63 - 1) | st.integers(-2, 64) | st.sampled_from([2**62, 2**63 - 1, -(2**63)])


@pytest.mark.parametrize(
    ("rows", "cols", "tail"),
    [(0, 2**62, b""), (0, 2**63 - 1, b""), (-1, 1, b""), (1, -1, b""), (1, 1, b"\x00" * 11), (2**62, 2, b"")],
)
def test_cases_decoder_refuses_a_shape_its_bytes_do_not_have(rows: int, cols: int, tail: bytes) -> None:
    # Prepare
    blob = np.array([rows, cols], "<i8").tobytes() + tail
    # Execute / Assert
    with pytest.raises(MalformedError, match="test cases"):
        cases_from_blob(blob)


@FUZZ
@given(
    blob=st.binary(max_size=200)
    | st.builds(lambda r, c, tail: np.array([r, c], "<i8").tobytes() + tail, SHAPE, SHAPE, st.binary(max_size=600))
)
def test_cases_decoder_raises_only_malformed_error(blob: bytes) -> None:
    # Execute / Assert
    _decodes_or_is_malformed(cases_from_blob, blob)


def test_a_node_without_encrypted_scoring_says_so_on_its_fhe_endpoints(net: Net) -> None:
    for answer in (
        net.http.get(f"/fhe/{'ab' * 32}"),
        net.http.post(f"/fhe/decrypt/{'ab' * 32}", headers=_request(net, 1), content=b"query"),
    ):
        _assert_refused(answer, 404, "does not do encrypted scoring")
    _assert_serving(net)
