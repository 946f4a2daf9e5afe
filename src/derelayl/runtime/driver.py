"""One round driver for every way a network runs in one process.

Each phase: every agent posts its signed messages to a transport; the agent drawn as the
phase's miner collects them, assembles the block and submits it to the chain client, which
applies the rules (and, on a real ledger, signs and stores it). The driver holds no keys and
makes no decisions: it only moves messages, as a network would (``derelayl node`` replaces
the in-process transport with HTTP).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from derelayl.agents.agent import Agent
from derelayl.errors import DerelaylError
from derelayl.ledger.client import ChainClient
from derelayl.protocol.appeals import settle_opens_at
from derelayl.protocol.messages import Signed
from derelayl.protocol.state import State
from derelayl.protocol.types import Phase

__all__ = ["InProcessTransport", "RoundDriver", "Transport"]

OnBlock = Callable[[State, Any], None]


class Transport(Protocol):
    def post(self, messages: Iterable[Signed]) -> None: ...

    def collect(self) -> list[Signed]:
        """Every message posted since the last collect (the drawn miner's inbox)."""
        ...


@dataclass
class InProcessTransport:
    inbox: list[Signed] = field(default_factory=list)
    messages_moved: int = 0

    def post(self, messages: Iterable[Signed]) -> None:
        for message in messages:
            self.inbox.append(message)
            self.messages_moved += 1

    def collect(self) -> list[Signed]:
        out, self.inbox = self.inbox, []
        return out


class RoundDriver:
    def __init__(self, chain: ChainClient, agents: Sequence[Agent], transport: Transport | None = None) -> None:
        self.chain = chain
        self.agents = list(agents)
        self.by_key = {agent.public: agent for agent in self.agents}
        self.transport: Transport = transport or InProcessTransport()
        self.challenges = 0
        """Challenges sent so far (``Params.challenge_bond``)."""

    def step(self) -> Any:
        """Play the current phase: messages in, the drawn miner's block out. Returns the receipt."""
        if self.chain.state.phase == Phase.SETTLE and self.chain.state.params.challenge_bond:
            self._challenge_window()
        state = self.chain.state
        assert state.roles is not None
        for agent in self.agents:
            sent = agent.messages(state)
            self.transport.post(sent)
            for post in agent.posts(sent):  # straight to the ledger (a commitment no miner may omit)
                self.chain.send(post, agent.signer)
        miner_index = state.roles.block_miners[int(state.phase)]
        miner = self.by_key.get(state.keys[miner_index])
        if miner is None:
            raise DerelaylError(f"participant {miner_index}, drawn as miner, is not one of this process's agents")
        proposal = miner.propose(state, self.transport.collect())
        return self.chain.submit(proposal, miner.signer)

    def _challenge_window(self) -> None:
        """Settle phase with challenges on: each agent may challenge (straight to the ledger;
        the first challenge opens the appeal, after which nobody else needs to); if nobody
        does, the ledger's clock runs to the end of the window before the settle block."""
        for agent in self.agents:
            challenge = agent.challenge(self.chain.state)
            if challenge is not None:
                self.chain.send(challenge, agent.signer)
                self.challenges += 1
                break
        self.chain.wait_until(settle_opens_at(self.chain.state))

    def run(self, rounds: int, on_block: OnBlock | None = None) -> State:
        """Play phases until ``rounds`` rounds have settled."""
        while self.chain.state.round < rounds:
            receipt = self.step()
            if on_block is not None:
                on_block(self.chain.state, receipt)
        return self.chain.state
