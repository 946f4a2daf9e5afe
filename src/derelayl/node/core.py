"""One participant as a process: follow the contract, act on the round, serve what it holds.

A ``Node`` owns one key, one private shard, one model store and one ``ContractClient`` (its
state is a verified replay of the contract's logs). Its main loop, every ``poll`` seconds:

1. syncs the chain and publishes a read-only ``View`` for the HTTP handlers;
2. once per (round, phase), asks its ``Agent`` what to say (bids; after training, the
   commitment; as co-tester, scores) and posts the signed messages to every peer;
3. if it is the phase's drawn miner — or, once the phase has timed out on chain, the next
   volunteer after it — waits until every expected message is in (or its patience ends),
   assembles the block and sends the phase transaction.

Models move between nodes, never through the chain: a trainer fetches its parent from its
model owner's node, a tester each committed model from its trainer's node, with a request
signed by its key (``wire.FetchRequest``) that the holder checks against the chain; the
bytes are re-hashed against the digest on chain before use. Everything a node needs after a
restart is on disk (key, model store, published test cases) or on chain.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from derelayl.agents.agent import Agent
from derelayl.agents.books import ModelBook
from derelayl.agents.relay import RelayBrain
from derelayl.errors import DerelaylError, ModelError
from derelayl.evm.client import ContractClient
from derelayl.evm.node import Node as EvmNode
from derelayl.evm.signing import EvmKey, key_of_address
from derelayl.folders import write_atomic
from derelayl.learning.data import case_blob
from derelayl.learning.store import DirModelStore
from derelayl.ledger.client import ChainEvent
from derelayl.node.cases import CaseExchange
from derelayl.node.fhe import FheExchange
from derelayl.node.peers import PeerBook
from derelayl.node.view import View, make_view
from derelayl.node.wire import FetchRequest
from derelayl.protocol.appeals import settle_opens_at
from derelayl.protocol.blocks import Join, is_block
from derelayl.protocol.messages import BidMessage, CasesMessage, CommitMessage, JoinMessage, ScoresMessage, Signed
from derelayl.protocol.state import State
from derelayl.protocol.types import Phase
from derelayl.protocol.validate import phase_timed_out

__all__ = ["Node", "NodeSettings", "View", "stage"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeSettings:
    poll: float = 0.05
    """Seconds between chain polls."""
    patience: tuple[float, float, float, float] = (20.0, 300.0, 300.0, 0.0)
    """Seconds a miner waits for missing messages, per phase, before producing anyway."""
    volunteer: bool = True
    """Produce a phase whose drawn miner is silent, once it has timed out on chain."""
    max_inbox: int = 4096
    """Messages kept per round (a flood cannot exhaust memory)."""
    resend: float = 2.0
    """Seconds between re-posts of this phase's messages while the phase lasts (a peer that
    was starting or restarting gets them; receivers keep the first copy)."""
    volunteers: int = 3
    """Messages go to the phase's drawn miner and this many volunteers after it."""
    post_commitments: bool = False
    """Also send this node's commitments straight to the contract (``Agent.post_commitments``)."""


def stage(state: State) -> tuple[int, int]:
    """The (round, phase) a node acts in. A settle phase whose appeal a challenge opened is a
    stage of its own (4): its appellants, drawn at the challenge, act then."""
    challenged = state.phase == Phase.SETTLE and state.dispute is not None and state.dispute.challenger >= 0
    return state.round, 4 if challenged else int(state.phase)


class Node:
    def __init__(
        self,
        key: EvmKey,
        home: Path,
        evm: EvmNode,
        contract: str,
        brain_factory: Any,
        peers: PeerBook,
        settings: NodeSettings | None = None,
    ) -> None:
        self.home = home
        self.settings = settings or NodeSettings()
        self.lock = threading.RLock()
        self.stopped = threading.Event()
        self.evm = evm
        self.client = ContractClient(evm, contract, on_event=self._on_block)
        self.signer = self.client.signer(key)
        self.peers = peers
        store = DirModelStore(home / "models")
        self.models: ModelBook
        self.brain: RelayBrain = brain_factory(store, self._fetch_model)
        self.models = self.brain.models
        self.brain.on_cases = self._publish_cases
        self.case_exchange = CaseExchange(self)
        self.brain.peer_cases = self.case_exchange.fetch
        self.fhe = None if self.brain.fhe is None else FheExchange(self, self.brain.fhe)
        genesis = self.client.history.genesis_model
        if genesis != bytes(32) and self.models.index[0] != genesis:
            ours = self.models.index[0].hex()[:16]
            raise DerelaylError(
                f"this node's genesis model {ours} is not the contract's {genesis.hex()[:16]}: other data or seed?"
            )
        self.agent = Agent(self.signer, self.brain, post_commitments=self.settings.post_commitments)
        self.inbox: dict[int, dict[tuple[type, int, Any], Signed]] = defaultdict(dict)
        self.acted: set[tuple[int, int]] = set()
        self.outbox: tuple[tuple[int, int], list[Signed], float] = ((-1, -1), [], 0.0)
        self.acting_for: tuple[int, int] = (-1, -1)
        """(round, phase) the agent is acting for (a fetch stops once it is over)."""
        self.phase_seen_at: dict[tuple[int, int], float] = {}
        self.used_nonces: dict[int, set[bytes]] = defaultdict(set)
        (home / "cases").mkdir(parents=True, exist_ok=True)
        self.view = self._make_view()
        self.stats: dict[str, float] = defaultdict(float)

    # ------------------------------------------------------------ chain

    def _on_block(self, event: ChainEvent, _tx: bytes, state: State) -> None:
        if is_block(event.operation):
            self.models.follow(state)

    def sync(self) -> State:
        with self.lock:
            self.client.sync()
            state = self.client.state
            self.phase_seen_at.setdefault(stage(state), time.monotonic())
            self.view = self._make_view()
            for r in [r for r in self.inbox if r < state.round - 1]:
                del self.inbox[r]
                self.used_nonces.pop(r, None)
            return state

    def _make_view(self) -> View:
        state = self.client.state
        scoring = state.phase == Phase.TEST or (state.phase == Phase.SETTLE and state.appeal_open)
        timed_out = scoring and phase_timed_out(state, self.client.synced_to + 1)
        me = state.key_index.get(self.signer.public)
        return make_view(state, me, self.models.index, timed_out, encrypted=self.fhe is not None)

    # ------------------------------------------------------------ messages in

    def accept(self, signed: Signed) -> str:
        """A message posted by a peer: keep it for the round's miner if it is signed by its
        sender and new. Returns what happened (for the HTTP answer)."""
        m = signed.message
        view = self.view
        if isinstance(m, JoinMessage):
            public, round_index = m.key, view.round
        else:
            if not view.round - 1 <= m.round <= view.round + 1:
                raise DerelaylError(f"message for round {m.round}; this node is at round {view.round}")
            if not 0 <= m.participant < len(view.keys):
                raise DerelaylError(f"participant {m.participant} is not registered")
            public, round_index = view.keys[m.participant], m.round
        if not self.signer.verify(public, m, signed.signature):
            raise PermissionError("signature does not verify")
        slot = (type(m), getattr(m, "participant", -1), getattr(m, "role", getattr(m, "key", None)))
        with self.lock:
            box = self.inbox[round_index]
            if slot in box:
                raise FileExistsError("already received (a replay, or a re-post)")
            if len(box) >= self.settings.max_inbox:
                raise OverflowError("this round's inbox is full")
            box[slot] = signed
        return "accepted"

    def _post(self, state: State, messages: list[Signed]) -> None:
        """Keep our own messages, and post them to the nodes that can use them: the phase's
        drawn miner and the next volunteers (who produce the phase if the miner is silent)."""
        for signed in messages:
            try:
                self.accept(signed)
            except FileExistsError:
                pass  # after a restart: this node had already kept its own message
        if messages:
            self.peers.send_to(self._producers(state), messages)

    def _producers(self, state: State) -> list[bytes]:
        assert state.roles is not None
        drawn, n = state.roles.block_miners[int(state.phase)], state.n_participants
        ranks = range(min(1 + self.settings.volunteers, n))
        return [
            state.keys[(drawn + r) % n] for r in ranks if (drawn + r) % n != state.key_index.get(self.signer.public)
        ]

    # ------------------------------------------------------------ models and cases out

    def model_for(self, request: FetchRequest, phase: int | None = None) -> bytes:
        """The bytes of a model a peer may fetch now; ``PermissionError`` if it may not,
        ``LookupError`` if this node has not yet reached the requester's round or ``phase``
        (an unsigned hint: it only turns a refusal into "try again")."""
        self.entitled_requester(request, phase)
        if not self.models.store.has(request.digest):
            raise FileNotFoundError("this node does not hold that model")
        self.spend(request)
        return self.models.store.get(request.digest)

    def entitled_requester(self, request: FetchRequest, phase: int | None = None) -> int:
        """The participant that signed ``request``, if the chain entitles it to the request's
        model now (a model file through the commitment naming it, and then only as a matched
        trainer: ``View.clear``). The caller then ``spend``s the request once it will answer it."""
        view = self.view
        if request.round != view.round:
            raise LookupError(f"request for round {request.round}; this node is at round {view.round}")
        if phase is not None and phase > int(view.phase):
            raise LookupError(f"request for phase {phase}; this node is at phase {int(view.phase)}")
        signer = request.signer(self.client.history.domain)
        if signer is None:
            raise PermissionError("the request's signature does not verify")
        key = key_of_address(signer)
        who = view.keys.index(key) if key in view.keys else None
        digest = request.digest if self.fhe is None else self.fhe.commitment_of(request.digest)
        # a model file behind an encrypted commitment: only a matched trainer, to its parent;
        # testers and appellants get the manifest and score the ciphertexts
        allowed = view.entitled if digest == request.digest else view.clear
        if who is None or who not in allowed.get(digest, frozenset()):
            raise PermissionError("the chain does not entitle this requester to that model now")
        return who

    def spend(self, request: FetchRequest) -> None:
        """Each signed request is answered once: a replay is refused."""
        with self.lock:
            if request.nonce in self.used_nonces[request.round]:
                raise PermissionError("replayed request (nonce already used)")
            self.used_nonces[request.round].add(request.nonce)

    def _fetch_model(self, digest: bytes) -> bytes:
        """Ask the nodes that may hold ``digest`` (its trainer, or its model owner). While it
        waits (the holder may not have seen the block that entitles us yet, or may be
        restarting) it keeps following the chain, and gives up once the phase it acts for is
        over: the action is moot then."""
        last: Exception | None = None
        for state in self.while_acting(f"model {digest.hex()[:16]}"):
            named = self.models.committed_as.get(digest, digest)  # a model file: its commitment
            holders = [
                int(o)
                for m, o in zip(state.live.model_id, state.live.owner, strict=True)
                if self.models.index.get(int(m)) == named
            ]
            holders += [int(o) for o, d in zip(state.commits.owner, state.commitments, strict=True) if d == named]
            if not holders:
                raise ModelError(f"no participant holds model {digest.hex()[:16]} this round")
            for holder in holders:
                request = FetchRequest.make(self.signer, state.round, digest)
                try:
                    data = self.peers.fetch(state.keys[holder], request, phase=int(state.phase))
                    self.stats["bytes_in"] += len(data)
                    return data
                except (LookupError, OSError, DerelaylError) as exc:
                    last = exc
        raise ModelError(f"model {digest.hex()[:16]} could not be fetched ({last})")

    def while_acting(self, what: str, seconds: float = 120) -> Iterator[State]:
        """The chain state, synced afresh for each try, while the phase this node acts for
        lasts (up to ``seconds``; a short pause between tries). A peer may not have seen the
        block that lets it answer yet, or may be restarting; once the phase is over the action
        is moot: ``ModelError`` naming ``what``. Ends (the caller gives up) at the deadline."""
        acting, deadline = self.acting_for, time.monotonic() + seconds
        while time.monotonic() < deadline and not self.stopped.is_set():
            state = self.sync()
            if stage(state) != acting:
                raise ModelError(f"{what}: round {acting[0]} phase {acting[1]} is over")
            yield state
            self.stopped.wait(0.1)

    def _publish_cases(self, x: np.ndarray, y: np.ndarray) -> None:
        from derelayl.learning.data import case_digest

        path = self.home / "cases" / case_digest(x, y).hex()
        if not path.exists():
            write_atomic(path, case_blob(x, y))

    def cases(self, digest: bytes) -> bytes:
        path = self.home / "cases" / digest.hex()
        if not path.is_file():
            raise FileNotFoundError("no published test cases with that digest")
        return path.read_bytes()

    # ------------------------------------------------------------ the loop

    def run(self, until_round: int | None = None) -> None:
        while not self.stopped.is_set():
            try:
                state = self.sync()
                if until_round is not None and state.round >= until_round:
                    return
                self.step(state)
            except DerelaylError as exc:
                log.warning("round step: %s", exc)
            self.stopped.wait(self.settings.poll)

    def step(self, state: State) -> None:
        me = state.key_index.get(self.signer.public)
        if me is None:
            self._register()
            return
        assert state.roles is not None
        key = stage(state)
        self.acting_for = key
        if key not in self.acted:
            snapshot = state.copy()
            started = time.monotonic()
            messages = self.agent.messages(snapshot)
            self._post(state, messages)
            self.outbox = (key, messages, time.monotonic())
            self.stats["acting_seconds"] += time.monotonic() - started
            self.acted.add(key)
            for post in self.agent.posts(messages):  # straight to the contract: no miner may omit it
                try:
                    self.client.send(post, self.signer)
                except DerelaylError as exc:  # e.g. the phase moved on: the message went to the miners too
                    log.warning("commitment of round %d not posted: %s", post.round, exc)
            self._challenge(snapshot)
        elif self.outbox[0] == key and self.outbox[1] and time.monotonic() - self.outbox[2] >= self.settings.resend:
            self.peers.send_to(self._producers(state), self.outbox[1])
            self.outbox = (key, self.outbox[1], time.monotonic())
        if self._my_turn(state, me):
            self._produce(state)

    def _challenge(self, state: State) -> None:
        """With challenges on: as a trainer of a round whose testers agreed, challenge it straight
        on the contract if the published scores of the models this node holds are wrong."""
        challenge = self.agent.challenge(state)
        if challenge is None:
            return
        try:
            self.client.send(challenge, self.signer)
        except DerelaylError as exc:  # e.g. another trainer challenged first, or the round settled
            log.info("challenge of round %d not taken: %s", challenge.round, exc)
            return
        self.stats["challenges"] += 1
        log.info("challenged round %d: the published scores of a model this node holds are wrong", challenge.round)

    def _register(self) -> None:
        if (-1, -1) in self.acted:
            return
        self.acted.add((-1, -1))
        self.client.send(Join(self.signer.public), self.signer)
        log.info("registered %s", self.signer.address)

    def _my_turn(self, state: State, me: int) -> bool:
        assert state.roles is not None
        drawn = state.roles.block_miners[int(state.phase)]
        if drawn == me:
            return True
        if not self.settings.volunteer:
            return False
        rank = (me - drawn) % state.n_participants  # volunteers take turns: 2 blocks each
        return phase_timed_out(state, self.evm.block_number() + 1 - 2 * (rank - 1))

    def _ready(self, state: State) -> bool:
        assert state.roles is not None
        if state.phase == Phase.SETTLE and state.params.challenge_window and not state.appeal_open:
            # an unchallenged round settles only after its window: until then anyone may challenge
            return self.evm.block_number() + 1 >= settle_opens_at(state)
        box = self.inbox.get(state.round, {})
        waited = time.monotonic() - self.phase_seen_at.get(stage(state), time.monotonic())
        disputed = state.phase == Phase.SETTLE and state.appeal_open
        # a disputed round's settle block waits for its appellants as a test block for its testers
        patience = self.settings.patience[int(Phase.TEST if disputed else state.phase)]
        if waited >= patience:
            return True
        if phase_timed_out(state, self.evm.block_number() + 1):
            return True  # the phase has timed out on chain: whoever stayed silent is left out
        if state.phase == Phase.DEPOSIT:
            have = {(m.participant, m.role) for m in (s.message for s in box.values()) if isinstance(m, BidMessage)}
            need = {(int(t), "trainer") for t in state.roles.trainers} | {
                (int(o), "model_owner") for o in state.roles.model_owners
            }
            if state.params.case_commitments:
                have |= {
                    (m.participant, "cases") for m in (s.message for s in box.values()) if isinstance(m, CasesMessage)
                }
                need |= {(int(t), "cases") for t in state.roles.testers}
            return need <= have
        if state.phase == Phase.COMMIT:
            have_c = {m.participant for m in (s.message for s in box.values()) if isinstance(m, CommitMessage)}
            return set(state.pairs.trainer.tolist()) <= have_c
        if state.phase == Phase.TEST:
            have_s = {m.participant for m in (s.message for s in box.values()) if isinstance(m, ScoresMessage)}
            return {int(t) for t in state.roles.testers[1:]} <= have_s
        if disputed:
            assert state.dispute is not None
            have_a = {m.participant for m in (s.message for s in box.values()) if isinstance(m, ScoresMessage)}
            return set(state.dispute.appellants.tolist()) <= have_a
        return True

    def _produce(self, state: State) -> None:
        if not self._ready(state):
            return
        inbox = list(self.inbox.get(state.round, {}).values())
        kinds = {
            Phase.DEPOSIT: (BidMessage, JoinMessage, CasesMessage),
            Phase.COMMIT: (CommitMessage,),
            Phase.TEST: (ScoresMessage,),
            Phase.SETTLE: (ScoresMessage,),  # a disputed round's appeal reports
        }
        wanted = kinds.get(state.phase, ())
        inbox = [s for s in inbox if isinstance(s.message, wanted)]
        started = time.monotonic()
        proposal = self.agent.propose(state.copy(), inbox, now=self.evm.block_number())
        try:
            self.client.submit(proposal, self.signer)
        except DerelaylError as exc:
            # another volunteer was faster, or the phase moved on: nothing to undo
            log.info("phase %s of round %d not produced: %s", state.phase.name.lower(), state.round, exc)
        self.stats["producing_seconds"] += time.monotonic() - started
