"""The learning side: real training, deterministic model bytes, the store, private shards,
and the link between the ledger's commitments and the models that were scored."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from derelayl.agents.agent import Agent
from derelayl.agents.books import ModelBook, Traffic
from derelayl.agents.relay import RelayBrain, relay_brains
from derelayl.errors import ConfigError, ModelError
from derelayl.learning.data import DataAccessError, case_digest, load_dataset
from derelayl.learning.interfaces import Evaluator, M, Trainer
from derelayl.learning.latent_adapters import LatentEvaluator, LatentModelTrainer
from derelayl.learning.partition import Split, make_split
from derelayl.learning.seeds import derive_seed
from derelayl.learning.serialization import model_digest, weights_from_bytes, weights_to_bytes
from derelayl.learning.setup import LearningSetup, build_setup
from derelayl.learning.store import DirModelStore, MemoryModelStore
from derelayl.ledger.client import StateClient
from derelayl.protocol import Params, Phase, blocks, preset
from derelayl.protocol.genesis import initialize_state
from derelayl.runtime.driver import RoundDriver

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup() -> LearningSetup:
    return build_setup("digits", participants=8, partition="dirichlet", partition_options={"alpha": 0.5})


class Network:
    """Eight agents, each with its own RelayBrain, on the rules in memory."""

    def __init__(self, setup: LearningSetup, params: Params | None = None) -> None:
        keys = [hashlib.sha256(bytes([i])).digest() for i in range(8)]
        self.client = StateClient(initialize_state(params or preset("minimal"), b"\x01" * 32, keys))
        self.models = ModelBook.of_genesis(MemoryModelStore(), setup.init, {"spec": setup.spec.to_dict()})
        self.brains = relay_brains(setup, self.models, seed=5)
        agents = [Agent(self.client.signer(k), b) for k, b in zip(keys, self.brains, strict=True)]
        self.driver = RoundDriver(self.client, agents)

    @property
    def state(self):  # type: ignore[no-untyped-def]
        return self.client.state

    def step(self) -> object:
        receipt = self.driver.step()
        self.models.follow(self.state)
        return receipt

    def last_block(self) -> object:
        return self.client._log[-1].operation


def test_training_changes_the_model_and_improves_its_own_score(setup: LearningSetup) -> None:
    # Prepare
    shard = setup.shards()[3]
    x, y = shard.read(3)
    trainer, evaluator = setup.trainer(), setup.evaluator()
    before = evaluator.evaluate(setup.init, x, y)
    # Execute
    child = setup.init
    for epoch in range(30):
        child = trainer.train(child, x, y, seed=epoch)
    # Assert
    assert any(not torch.equal(child[k], setup.init[k]) for k in child)
    assert evaluator.evaluate(child, x, y) > before + 0.2


def test_training_is_deterministic_per_seed(setup: LearningSetup) -> None:
    x, y = setup.shards()[0].read(0)
    a = setup.trainer().train(setup.init, x, y, seed=11)
    b = setup.trainer().train(setup.init, x, y, seed=11)
    assert weights_to_bytes(a, {}) == weights_to_bytes(b, {})


def test_model_bytes_are_deterministic_and_round_trip(setup: LearningSetup) -> None:
    meta = {"round": 3, "trainer": 2, "spec": setup.spec.to_dict()}
    data = weights_to_bytes(setup.init, meta)
    assert data == weights_to_bytes(
        {k: v.clone() for k, v in reversed(setup.init.items())}, dict(reversed(meta.items()))
    )
    weights, back = weights_from_bytes(data)
    assert back == meta and all(torch.equal(weights[k], setup.init[k]) for k in weights)


def test_corrupted_model_file_is_a_clear_error(tmp_path: Path, setup: LearningSetup) -> None:
    # Prepare
    store = DirModelStore(tmp_path / "models")
    digest = store.put(weights_to_bytes(setup.init, {}))
    path = store.path(digest)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    # Execute / Assert
    with pytest.raises(ModelError, match="corrupted"):
        store.get(digest)
    with pytest.raises(ModelError, match="not a readable model file"):
        weights_from_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", name="x")
    with pytest.raises(ModelError, match="not in the model store"):
        store.get(b"\x00" * 32)


def test_shards_are_readable_only_by_their_owner(setup: LearningSetup) -> None:
    shards = setup.shards()
    with pytest.raises(DataAccessError, match="participant 1 tried to read participant 0"):
        shards[0].read(1)
    with pytest.raises(DataAccessError):
        shards[2].draw_test_cases(3, 10, seed=0)


def test_relay_rounds_touch_each_shard_only_from_its_owner(setup: LearningSetup) -> None:
    # Prepare
    net = Network(setup)
    # Execute: three full rounds
    for _ in range(12):
        net.step()
    # Assert: every read was the owner's, and training and testing really read data
    shards = [b.shard for b in net.brains]
    assert all(set(s.reads) <= {s.owner} for s in shards)
    assert sum(len(s.reads) for s in shards) >= 3 * 2
    assert net.state.round == 3 and len(net.models.index) > 1


def test_a_brain_cannot_train_or_test_on_another_participants_data(setup: LearningSetup) -> None:
    # Prepare: participant 2's brain, asked to act for participant 3
    net = Network(setup)
    net.step()
    state = net.state
    trainer = int(state.pairs.trainer[0])
    other = (trainer + 1) % 8
    # Execute / Assert
    with pytest.raises(DataAccessError, match=f"participant {trainer} tried to read participant {other}"):
        net.brains[other].train(state, trainer)
    with pytest.raises(DataAccessError):
        net.brains[other].score(state, trainer)


def test_ledger_commitment_is_the_hash_of_the_model_scored(setup: LearningSetup) -> None:
    # Prepare: record what the testing miner evaluates
    net = Network(setup)
    for _ in range(2):
        net.step()
    state = net.state
    assert state.phase == Phase.TEST and state.roles is not None
    tester = state.roles.block_miners[2]
    evaluator = net.brains[tester].evaluator
    scored: list[bytes] = []
    predict = evaluator.predict

    def spy(model, x):  # type: ignore[no-untyped-def]
        scored.append(weights_to_bytes(model, {}))
        return predict(model, x)

    evaluator.predict = spy  # type: ignore[method-assign]
    commitments = list(state.commitments)
    # Execute
    net.step()
    block = net.last_block()
    # Assert: the i-th scored model is the model whose bytes hash to the i-th commitment
    assert isinstance(block, blocks.TestBlock)
    assert len(scored) == len(commitments) > 0
    for digest, seen in zip(commitments, scored, strict=True):
        data = net.models.store.get(digest)
        assert model_digest(data) == digest
        assert weights_to_bytes(weights_from_bytes(data)[0], {}) == seen
    x, y = net.brains[tester].shard.draw_test_cases(tester, state.params.test_cases, derive_seed(5, "tests", 0, tester))
    assert block.test_cases_digest == case_digest(x, y)


def test_scores_are_counts_of_correct_predictions(setup: LearningSetup) -> None:
    # Prepare
    net = Network(setup)
    for _ in range(2):
        net.step()
    state = net.state
    tester = state.roles.block_miners[2]
    brain = net.brains[tester]
    # Execute
    _, scores = brain.score(state, tester)
    # Assert: integer counts out of the round's test cases, equal to accuracy x cases
    n = state.params.test_cases
    x, y = brain.shard.draw_test_cases(tester, n, derive_seed(5, "tests", state.round, tester))
    expected = [round(brain.evaluator.evaluate(net.models.load(d), x, y) * n) for d in state.commitments]
    assert scores.dtype == np.int64 and scores.tolist() == expected
    assert all(0 <= s <= n for s in expected)


def test_traffic_is_counted_where_it_happens_and_summed(setup: LearningSetup) -> None:
    # Prepare
    net = Network(setup)
    # Execute: one full round
    for _ in range(4):
        net.step()
    # Assert: every trainer received its parent and copied its child to the commit miner;
    # the tester received every model
    total = Traffic.total(b.traffic for b in net.brains)
    size = net.models.model_bytes
    models = int(net.state.next_model_id - 1)
    assert total.owner_to_trainer == total.commit_miner_copies == models * size > 0
    assert total.trainer_to_tester == models * size
    assert total.total_bytes == 3 * models * size + total.test_cases
    trainers = [b for b in net.brains if b.traffic.local_epochs]
    assert len(trainers) == models


def test_merge_top_k_averages_other_live_models(setup: LearningSetup) -> None:
    # Prepare: every model selected, so round 1 has two live models; one brain merges the top 2
    net = Network(setup, Params(k=2, test_cases=10, select_fraction=1))
    while net.state.round < 1 or net.state.phase != Phase.COMMIT:
        net.step()
    state = net.state
    trainer = int(state.pairs.trainer[0])
    merging = RelayBrain(
        net.brains[trainer].shard, setup.trainer(), setup.evaluator(), net.models, seed=5, merge_top_k=2
    )
    # Execute
    digest = merging.train(state, trainer)
    # Assert: it received two models and trained from their average
    assert len(state.live) == 2 and merging.traffic.owner_to_trainer == 2 * net.models.model_bytes
    assert digest is not None and digest != net.brains[trainer].train(state, trainer)


def test_dirichlet_split_is_a_disjoint_cover_and_round_trips(tmp_path: Path) -> None:
    # Prepare
    data = load_dataset("digits")
    split = make_split(data, 20, "dirichlet", 0.2, seed=0, alpha=0.5)
    # Execute
    split.save(tmp_path / "split.json")
    back = Split.load(tmp_path / "split.json")
    # Assert
    assert back == split
    back.validate(len(data))
    used = sorted([*back.test, *(i for p in back.participants for i in p)])
    assert used == list(range(len(data)))
    assert len(back.test) == 360 and min(len(p) for p in back.participants) >= 2
    assert back.preprocessing["raw"].startswith("pixel counts")


@pytest.mark.parametrize("partition", ["iid", "shards"])
def test_other_partitions_cover_the_training_set(partition: str) -> None:
    data = load_dataset("breast_cancer")
    split = make_split(data, 5, partition, 0.2, seed=1)
    split.validate(len(data))
    assert sum(len(p) for p in split.participants) + len(split.test) == len(data)


def test_standardize_uses_the_training_pool_only() -> None:
    setup = build_setup("digits", participants=4, partition="iid")
    pre = setup.split.preprocessing
    assert pre["kind"] == "standardize" and len(pre["mean"]) == 64
    x, _ = setup.train_pool()
    assert np.allclose(x.mean(axis=0), 0, atol=1e-4)
    assert not np.allclose(setup.x_test.mean(axis=0), 0, atol=1e-4)


def test_synthetic_dataset_has_natural_users() -> None:
    data = load_dataset("synthetic", users=6, seed=2)
    split = make_split(data, 6, "natural", 0.2, seed=0)
    for user, part in enumerate(split.participants):
        assert set(data.users[part].tolist()) == {user}
    assert data.n_features == 60 and data.n_classes == 10


def test_bad_data_settings_are_clear_errors() -> None:
    data = load_dataset("digits")
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_dataset("mnist")
    with pytest.raises(ConfigError, match="unknown partition"):
        make_split(data, 4, "zipf", 0.2, seed=0)
    with pytest.raises(ConfigError, match="no natural users"):
        make_split(data, 4, "natural", 0.2, seed=0)
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        make_split(data, 4, "dirichlet", 0.2, seed=0, alpha=0)
    with pytest.raises(ConfigError, match=r"not a valid split\.json"):
        Split.load(Path("/nonexistent/split.json"))


def test_test_cases_come_with_replacement_only_when_short(setup: LearningSetup) -> None:
    shard = setup.shards()[0]
    x, _ = shard.draw_test_cases(0, len(shard), seed=0)
    assert np.unique(x, axis=0).shape[0] == np.unique(shard.read(0)[0], axis=0).shape[0]
    x, _ = shard.draw_test_cases(0, 3 * len(shard), seed=0)
    assert x.shape[0] == 3 * len(shard)


def _relay_step(trainer: Trainer[M], evaluator: Evaluator[M], parent: M, x: np.ndarray, y: np.ndarray) -> float:
    """Code written once against the interfaces."""
    return evaluator.evaluate(trainer.train(parent, x, y, seed=1), x, y)


def test_latent_and_torch_models_share_the_interfaces(setup: LearningSetup) -> None:
    x, y = setup.shards()[1].read(1)
    latent = _relay_step(LatentModelTrainer(), LatentEvaluator(), 0.0, x, y)
    real = _relay_step(setup.trainer(), setup.evaluator(), setup.init, x, y)
    assert 0.0 < latent < 1.0 and 0.0 <= real <= 1.0


def test_a_model_from_a_peer_that_is_not_the_one_on_chain_is_refused_and_not_kept(setup: LearningSetup) -> None:
    """A node that serves wrong bytes is caught by the receiver's hash check (issue 8)."""
    # Prepare: a book that has to fetch model 5 from a peer, which answers with other bytes
    book = ModelBook.of_genesis(MemoryModelStore(), setup.init, {"spec": setup.spec.to_dict()})
    right = weights_to_bytes(setup.init, {"round": 1})
    wrong = weights_to_bytes(setup.init, {"round": 2})
    book.index[5] = model_digest(right)
    book.fetch = lambda digest: wrong
    # Execute / Assert: refused, nothing stored; the right bytes are accepted
    with pytest.raises(ModelError, match="from a peer hashes to"):
        book.weights(5)
    assert not book.store.has(model_digest(right)) and not book.store.has(model_digest(wrong))
    book.fetch = lambda digest: right
    assert set(book.weights(5)) == set(setup.init)
