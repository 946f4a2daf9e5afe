"""Start one node: its data and brain, its HTTP server (uvicorn, in a thread), its loop.

Data is given as ``digits:I/N``: shard I of the Dirichlet split of scikit-learn's digits over
N participants (``--split-seed``, ``--alpha``), the same split ``derelayl run --task digits``
makes; the node keeps only its own shard. The genesis model is built from the same spec and
init seed as everyone's and must hash to the digest the contract recorded.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derelayl.errors import ConfigError
from derelayl.evm.tools import open_node
from derelayl.folders import FolderLock
from derelayl.node.keys import load_key
from derelayl.node.peers import PeerBook

__all__ = ["DataSpec", "NodeOptions", "genesis_digest", "run_node"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSpec:
    shard: int
    of: int
    split_seed: int = 42
    alpha: float = 0.5
    task: str = "digits"
    """``digits``, or an experiment config file whose data, model and training the network
    relay-trains (``derelayl run --task FILE.toml`` makes the same split and genesis)."""
    fhe: bool = False
    """Encrypted scoring: the digits model becomes the quad-activation MLP (``run --fhe on``'s)."""

    @classmethod
    def parse(cls, text: str, split_seed: int, alpha: float, fhe: bool = False) -> DataSpec:
        match = re.fullmatch(r"(digits|.+\.toml):(\d+)/(\d+)", text)
        if match is None:
            raise ConfigError(f"--data must look like digits:I/N or FILE.toml:I/N (shard I of N), got {text!r}")
        task, shard, of = match[1], int(match[2]), int(match[3])
        if not 0 <= shard < of or of > 4096:
            raise ConfigError(f"--data: shard {shard} of {of} is not a shard (0 <= I < N <= 4096)")
        if not alpha > 0 or alpha != alpha or alpha == float("inf"):
            raise ConfigError(f"--alpha must be a positive finite number, got {alpha}")
        if task != "digits":
            from derelayl.experiments.config import load_config

            task = str(Path(task).resolve())
            load_config(Path(task))  # a bad file or plugin name stops here
        return cls(shard, of, split_seed, alpha, task, fhe)

    def learning(self) -> tuple[Any, dict[str, Any]]:
        """The network's learning set-up and the metadata every model file carries."""
        if self.task != "digits":
            from derelayl.runtime.torch_task import configured_setup

            setup, name, _ = configured_setup(self.task, self.of, self.split_seed)
        else:
            from derelayl.learning.setup import build_setup

            name = "digits"
            setup = build_setup(
                "digits",
                participants=self.of,
                partition="dirichlet",
                split_seed=self.split_seed,
                init_seed=self.split_seed,
                partition_options={"alpha": self.alpha},
                activation="quad" if self.fhe else "relu",
            )
        return setup, {"spec": setup.spec.to_dict(), "task": name}


def genesis_digest(spec: DataSpec) -> bytes:
    """SHA-256 of the genesis model every node of the network starts from."""
    from derelayl.learning.serialization import model_digest, weights_to_bytes

    setup, meta = spec.learning()
    return model_digest(weights_to_bytes(setup.init, {**meta, "round": -1, "trainer": 0, "parent": ""}))


@dataclass(frozen=True)
class NodeOptions:
    key: Path
    home: Path
    rpc: str
    contract: str
    data: DataSpec
    host: str = "127.0.0.1"
    port: int = 0
    peers: tuple[str, ...] = ()
    seed: int = 42
    rounds: int | None = None
    public_url: str | None = None
    local_epochs: int = 1
    post_commitments: bool = False
    """Send this node's commitments straight to the contract too (no commit miner can omit them)."""
    behave: str = "honest"
    """How this node behaves (``derelayl.agents.adversaries``; a devnet's ``--adversaries``)."""
    group: frozenset[int] = frozenset()
    """The participants a dishonest node colludes with (its own kind)."""
    rechecks: int = 0
    """With encrypted scoring and challenges: the round's other children this node's trainer
    re-scores under encryption before it decides to challenge (``RelayBrain.rechecks``)."""


def _brain_factory(
    spec: DataSpec,
    seed: int,
    local_epochs: int = 1,
    behave: str = "honest",
    group: frozenset[int] = frozenset(),
    rechecks: int = 0,
) -> Any:
    def make(store: Any, fetch: Any) -> Any:
        import torch

        from derelayl.agents.adversaries import behaving
        from derelayl.agents.books import ModelBook
        from derelayl.agents.relay import RelayBrain

        torch.set_num_threads(1)
        setup, meta = spec.learning()
        models = ModelBook.of_genesis(store, setup.init, meta)
        models.fetch = fetch
        shard = setup.shards()[spec.shard]
        trainer = setup.trainer(dataclasses.replace(setup.train_config, local_epochs=local_epochs))
        brain = behaving(
            RelayBrain(shard, trainer, setup.evaluator(), models, seed, meta=meta),
            behave,
            group,
            setup.dataset.n_classes,
        )
        if spec.fhe:
            from derelayl.fhe.scoring import encrypted_scoring

            brain.fhe = encrypted_scoring(setup.spec, models, store.root.parent)
            brain.rechecks = rechecks
        brain.warm_up(spec.shard)
        return brain

    return make


def run_node(options: NodeOptions, ready: threading.Event | None = None) -> None:
    """Serve and take part until stopped (SIGTERM/SIGINT) or ``options.rounds`` have settled;
    the node's home folder is locked meanwhile (one node per home)."""
    with FolderLock(options.home, "derelayl node"):
        _run_locked(options, ready)


def _run_locked(options: NodeOptions, ready: threading.Event | None) -> None:
    import uvicorn

    from derelayl.node.api import make_app
    from derelayl.node.core import Node, NodeSettings

    key = load_key(options.key)
    url = options.public_url or f"http://{options.host}:{options.port}"
    peers = PeerBook(list(options.peers), own_url=url)
    evm = open_node(options.rpc)
    brains = _brain_factory(
        options.data, options.seed, options.local_epochs, options.behave, options.group, options.rechecks
    )
    settings = NodeSettings(post_commitments=options.post_commitments)
    node = Node(key, options.home, evm, options.contract, brains, peers, settings)
    me = node.client.state.key_index.get(node.signer.public)
    if me is not None:
        node.brain.shard.owner = me  # this node's data is read by its own participant index
    server = uvicorn.Server(uvicorn.Config(make_app(node), host=options.host, port=options.port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    thread.start()

    def stop(*_: object) -> None:
        node.stopped.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not server.started:
            if not thread.is_alive():
                raise ConfigError(f"the HTTP server could not start on {options.host}:{options.port}")
            node.stopped.wait(0.02)
        log.info("node %s serving %s", key.address, url)
        if ready is not None:
            ready.set()
        peers.announce(url)
        peers.resolve()
        _run_registered(node)
        node.run(options.rounds)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.should_exit = True
        thread.join(timeout=5)
        peers.close()
        evm.close()


def _run_registered(node: Any) -> None:
    """A node that joins later registers first; its shard is read by its new index."""
    while not node.stopped.is_set():
        state = node.sync()
        me = state.key_index.get(node.signer.public)
        if me is not None:
            node.brain.shard.owner = me
            return
        node.step(state)
        node.stopped.wait(0.2)
