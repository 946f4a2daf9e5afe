"""Encrypted scoring (issue 11): CKKS scoring agrees with the clear, a tester never holds the
weights or a secret key, a wrong claimed score is refused, and ``run --fhe on`` runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("tenseal")

from derelayl.cli import app
from derelayl.fhe import ckks
from derelayl.fhe.ckks import SCHEME, EncryptedModel, FheError, KeyPair, QuadMLP, encrypt_model, load_context
from derelayl.fhe.query import Cases, decrypt_query, evaluate, logits_from_reply
from derelayl.fhe.scoring import MANIFEST_MAGIC, FheScoring, read_manifest
from derelayl.fhe.seal import Scratch, Seal
from derelayl.learning.serialization import weights_to_bytes
from derelayl.learning.setup import build_setup
from derelayl.learning.store import MemoryModelStore
from derelayl.learning.torch_models import TrainConfig
from derelayl.runtime.local import RunConfig, run_network
from derelayl.runtime.torch_task import TorchTask


@pytest.fixture(scope="module")
def trained() -> tuple[dict, np.ndarray, np.ndarray]:
    """A real quad MLP (64-64-10) trained on digits, and 100 held-out cases."""
    torch.set_num_threads(1)
    setup = build_setup("digits", participants=4, activation="quad")
    x, y = setup.train_pool()
    weights = setup.trainer(TrainConfig(lr=0.05, local_epochs=5)).train(setup.init, x, y, seed=0)
    return weights, setup.x_test[:100], setup.y_test[:100]


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair.generate()


def _score(key: KeyPair, model: QuadMLP, x: np.ndarray, seed: int = 1) -> np.ndarray:
    query = evaluate(key.public(), EncryptedModel.parse(encrypt_model(key, model)), x, seed)
    return logits_from_reply(decrypt_query(key, model, query), seed, len(x), model.shape[1])


def test_encrypted_and_clear_scoring_agree_on_real_models(trained, key) -> None:
    weights, x, y = trained
    for w in (weights, build_setup("digits", participants=4, activation="quad").init):  # trained and untrained
        model = QuadMLP.from_weights(w)
        logits, clear = _score(key, model, x), model.logits(x)
        assert np.abs(logits - clear).max() < 0.02
        top2 = np.sort(clear, axis=1)[:, -2:]
        clear_cut = top2[:, 1] - top2[:, 0] > 0.04  # (near-ties may flip: CKKS is approximate)
        assert clear_cut.mean() > 0.5 and (logits.argmax(1) == clear.argmax(1))[clear_cut].all()
    assert int((logits.argmax(1) == y).sum()) == int((clear.argmax(1) == y).sum())
    # the clear quad model is the torch module's own forward pass
    net = build_setup("digits", participants=4, activation="quad").spec.build()
    net.load_state_dict(weights)
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(x)).double().numpy()
    assert np.allclose(QuadMLP.from_weights(weights).logits(x), torch_logits, atol=1e-3)


def test_a_tester_gets_no_plaintext_weights_and_no_secret_key(trained, key) -> None:
    weights, x, _ = trained
    model = QuadMLP.from_weights(weights)
    public, encrypted = key.public(), encrypt_model(key, model)
    query = evaluate(public, EncryptedModel.parse(encrypted), x, 3)
    reply = decrypt_query(key, model, query)
    received = public + encrypted + reply.tobytes()  # everything a tester is handed
    for w in (model.w1, model.w2):
        for row in w[:8]:
            for dtype in ("<f4", "<f8"):
                assert row[:4].astype(dtype).tobytes() not in received
    ctx = load_context(public, "public key")  # a tester's context: no secret key ...
    assert not ctx.has_secret_key()
    import tenseal as ts

    with Scratch() as io:  # the weights' ciphertexts load in it ...
        layer1, layer2 = EncryptedModel.parse(encrypted).ciphertexts(ctx, io)
    assert len(layer1) == 65 and len(layer2) == 10 and Seal.of(ctx).decryptor is None
    with pytest.raises(ValueError, match="public"):  # ... but nothing in it decrypts them
        ctx.data.secret_key()
    with pytest.raises(FheError, match="carries a secret key"):  # and it is never handed one
        load_context(key.secret(), "key")
    assert isinstance(ts.context_from(key.secret()).secret_key(), ts.enc_context.SecretKey)
    # the reply is a rounded, masked sum per case and class: 10 numbers a case, not the slots
    assert reply.shape == (2, 10, 64)


def _commit(trained) -> tuple[FheScoring, bytes, np.ndarray, np.ndarray]:
    weights, x, y = trained
    models = MemoryModelStore()
    plain = models.put(weights_to_bytes(weights, {}))
    fhe = FheScoring(models, lambda d: weights, MemoryModelStore())
    commitment, size = fhe.commit(5, weights, plain)
    manifest = read_manifest(models.get(commitment))
    assert manifest is not None and manifest["model"] == plain.hex() and manifest["trainer"] == 5
    assert size > 1_000_000
    return fhe, commitment, x, y


def test_a_wrong_claimed_score_is_refused(trained) -> None:
    fhe, commitment, x, y = _commit(trained)
    t = fhe.score(tester=2, commitment=commitment, x=x, y=y, mask_seed=11)
    assert t.score == QuadMLP.from_weights(trained[0]).logits(x).argmax(1).__eq__(y).sum()
    fhe.check(t, x, y, t.score)  # the honest claim stands
    # ... also for anyone else, from the public objects alone, with no cases encoded before
    other = FheScoring(fhe.models_store, lambda d: None, fhe.store)
    other.check(t, x, y, t.score)
    with pytest.raises(FheError, match=f"claimed score {t.score + 1}, the ciphertexts support {t.score}"):
        fhe.check(t, x, y, t.score + 1)
    with pytest.raises(FheError, match="not the evaluation on these cases"):  # other cases than published
        fhe.check(t, x[::-1].copy(), y[::-1].copy(), t.score)
    # every byte a tester handled is counted; the public key once per tester
    assert t.bytes_moved["key"] > 1_000_000 and t.bytes_moved["ciphertext"] > 1_000_000
    assert fhe.score(2, commitment, x, y, 12).bytes_moved["key"] == 0


def test_a_trainer_that_knows_the_cases_cannot_aim_its_reply_at_a_shuffled_query(trained) -> None:
    # Prepare: a dishonest trainer answering an appellant or a re-checker, after the cases and
    # labels are published: to each slot it adds what makes the case it expects there right
    fhe, commitment, x, y = _commit(trained)
    honest = fhe.decrypt
    wrong = QuadMLP.from_weights(trained[0]).logits(x).argmax(1) != y
    assert wrong.sum() > 0  # there is something to forge

    def forging(trainer: int, manifest: dict, query: bytes) -> np.ndarray:
        reply = honest(trainer, manifest, query).copy()
        batch = reply.shape[2]
        for case, label in enumerate(y.tolist()):  # slot ``case`` holds case ``case``, it assumes
            reply[case // batch, label, case % batch] += 1_000.0
        return reply

    fhe.decrypt = forging  # type: ignore[method-assign]
    # Execute: a scoring in the published order, and one shuffled by the scorer's secret seed
    in_order = fhe.score(2, commitment, x, y, mask_seed=11)
    hidden_order = fhe.score(2, commitment, x, y, mask_seed=11, order_seed=5)
    # Assert: in order the forgery makes every case right; shuffled it lands on other cases
    # (right only where the shuffle left a case of the same label), and the check re-derives
    # the shuffled query from the transcript
    assert in_order.score == len(y)
    assert hidden_order.score < len(y) - wrong.sum()
    fhe.check(hidden_order, x, y, hidden_order.score)


def test_malformed_fhe_inputs_are_one_error_each(trained, key) -> None:
    weights, x, _ = trained
    encrypted = encrypt_model(key, QuadMLP.from_weights(weights))
    for bad, match in [
        (b"junk", "not a derelayl FHE container"),
        (encrypted[:-5], "malformed container"),
        (encrypted + b"x", "malformed container"),
    ]:
        with pytest.raises(FheError, match=match):
            EncryptedModel.parse(bad)
    with pytest.raises(FheError, match="not a TenSEAL context"):
        load_context(b"\x00" * 64, "public key")
    parsed = EncryptedModel.parse(encrypted)
    with pytest.raises(FheError, match="finite"):
        evaluate(key.public(), parsed, np.full((3, 64), np.nan), 1)
    with pytest.raises(FheError, match="shape"):
        evaluate(key.public(), parsed, x[:, :10], 1)
    deep = build_setup("digits", participants=4, hidden=(16, 16), activation="quad").init
    with pytest.raises(FheError, match="one-hidden-layer MLP"):
        QuadMLP.from_weights(deep)
    with pytest.raises(FheError, match="manifest is malformed"):
        read_manifest(MANIFEST_MAGIC + json.dumps({"model": "00"}).encode())
    assert read_manifest(b"a plain model file") is None
    with pytest.raises(FheError, match="reply"):
        logits_from_reply(np.zeros((1, 10, 64)), 1, 100, 64)


def test_run_with_fhe_on_scores_encrypted_models_as_the_clear_would(tmp_path: Path) -> None:
    tasks: list[TorchTask] = []

    def factory(config: RunConfig, out_dir: Path) -> TorchTask:
        task = TorchTask(config, out_dir)
        assert task.fhe is not None
        task.fhe.measure_clear = True
        tasks.append(task)
        return task

    out = tmp_path / "run"
    config = RunConfig(participants=8, rounds=2, seed=5, task="digits", fhe=True)
    summary = run_network(config, out, factory)
    agreement = tasks[0].fhe.agreement
    assert len(agreement) >= 4 and all(enc == clear for _, enc, clear, _ in agreement)
    # commitments on the chain are manifests that bind model, ciphertext and key
    first = agreement[0][0]
    assert read_manifest((out / "models" / f"{first.hex()}.safetensors").read_bytes()) is not None
    assert len(list((out / "fhe-keys").glob("participant-*.key"))) >= 2
    runner = CliRunner()
    assert runner.invoke(app, ["verify", str(out / "chain.sqlite")]).exit_code == 0
    # resumes with the same mode; refuses the other one before writing
    result = runner.invoke(app, ["run", "--participants", "8", "--seed", "5", "--rounds", "2", "--out", str(out)])
    assert result.exit_code == 2 and "with encrypted scoring" in result.output
    result = runner.invoke(
        app, ["run", "--participants", "8", "--seed", "5", "--rounds", "3", "--fhe", "on", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["rounds"] == 3
    assert summary["rounds"] == 2


def test_fhe_option_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    for args, match in [
        (["--fhe", "maybe"], "--fhe must be on or off"),
        (["--fhe", "on", "--task", "latent"], "needs real models"),
    ]:
        result = runner.invoke(app, ["run", *args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and match in result.output, result.output
        assert not (tmp_path / "x").exists()


def test_fhe_runs_repeat_their_results_but_not_their_head_hash(tmp_path: Path) -> None:
    """Encryption draws fresh randomness inside SEAL (TenSEAL exposes no seed): the
    commitments differ, everything the rules compute from the scores does not."""
    summaries = []
    for name in ("a", "b"):
        config = RunConfig(participants=6, rounds=1, seed=9, task="digits", fhe=True)
        summaries.append(run_network(config, tmp_path / name, TorchTask))
    a, b = summaries
    assert a["head_hash"] != b["head_hash"]
    for key in ("balances", "money", "accuracy_per_round", "best_model", "latest_version"):
        assert a[key] == b[key], key


def test_fhe_needs_a_model_it_can_score_and_says_which(tmp_path: Path) -> None:
    from derelayl.errors import ConfigError
    from derelayl.experiments.config import parse_config

    raw = {
        "data": {"dataset": "digits", "participants": 4},
        "model": {"hidden": [16]},
        "methods": {"derelayl": {"rounds": 2, "fhe": True}},
    }
    with pytest.raises(ConfigError, match='fhe = true needs \\[model\\] activation = "quad"'):
        parse_config(raw)
    raw["model"] = {"hidden": [16], "activation": "quad"}
    assert parse_config(raw).methods["derelayl"]["fhe"] is True
    raw["methods"]["derelayl"]["fhe"] = "yes"
    with pytest.raises(ConfigError, match="fhe"):
        parse_config(raw)
    runner = CliRunner()
    result = runner.invoke(app, ["devnet", "--fhe", "maybe", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "--fhe must be on or off" in result.output
    assert not (tmp_path / "d").exists()
    node = ["node", "--key", str(tmp_path / "k"), "--rpc", "http://127.0.0.1:1", "--contract", "0x0"]
    result = runner.invoke(app, [*node, "--data", "digits:0/4", "--fhe", "maybe", "--home", str(tmp_path / "h")])
    assert result.exit_code == 2 and "--fhe must be on or off" in result.output
    assert not (tmp_path / "h").exists()


def test_a_settled_rounds_ciphertexts_are_pruned_and_keys_kept(trained) -> None:
    weights, _, _ = trained
    models = MemoryModelStore()
    fhe = FheScoring(models, lambda d: weights, MemoryModelStore())
    kept, _ = fhe.commit(1, weights, models.put(weights_to_bytes(weights, {"n": 1})))
    gone, _ = fhe.commit(2, weights, models.put(weights_to_bytes(weights, {"n": 2})))
    named = {c: read_manifest(models.get(c)) for c in (kept, gone)}
    assert fhe.prune([kept]) == 1
    assert fhe.store.has(bytes.fromhex(named[kept]["ciphertext"]))
    assert not fhe.store.has(bytes.fromhex(named[gone]["ciphertext"]))
    assert all(fhe.store.has(bytes.fromhex(m["key"])) for m in named.values())  # keys stay


def test_fresh_ciphertexts_are_stored_seeded_and_layer_2_two_levels_down(trained, key) -> None:
    """A fresh symmetric-key ciphertext is stored as one polynomial and the seed of the other:
    at most N * primes * 8 bytes (SEAL compresses below that), half of an expanded one."""
    # Prepare
    model = QuadMLP.from_weights(trained[0])
    n = SCHEME.poly_modulus_degree
    # Execute
    encrypted = encrypt_model(key, model)
    _, parts = ckks.unpack(encrypted, "model")
    # Assert
    assert len(parts) == 65 + 10
    assert all(len(p) <= n * 4 * 8 for p in parts[:65])  # layer 1: the top level, 4 primes
    assert all(len(p) <= n * 2 * 8 for p in parts[65:])  # layer 2: two rescales down, 2 primes
    assert len(encrypted) < 65 * n * 4 * 8 + 10 * n * 2 * 8 + 4096  # 18.4 MB; 75 expanded ones took 25.5 MB


def test_encoded_cases_give_the_same_query_and_only_for_their_cases(trained, key) -> None:
    # Prepare
    weights, x, _ = trained
    model = QuadMLP.from_weights(weights)
    encrypted = EncryptedModel.parse(encrypt_model(key, model))
    cases = Cases.encode(x, 64, 64)
    # Execute
    fresh, reused = evaluate(key.public(), encrypted, x, 5), evaluate(key.public(), encrypted, x, 5, cases)
    # Assert
    assert fresh == reused
    with pytest.raises(FheError, match="not these cases"):
        evaluate(key.public(), encrypted, x[:50], 5, cases)


def _retouched(data: bytes, index: int, level: int, context: object, change) -> bytes:
    header, parts = ckks.unpack(data, "container")
    with Scratch() as io:
        ct = Seal.of(context).load(parts[index], level, io)
        change(ct)
        parts[index] = io.save(ct)
    header.pop("parts")
    return ckks.pack(header, parts)


def test_a_query_or_model_off_the_evaluations_levels_and_scales_is_refused(trained, key) -> None:
    """A tester could set a query's scale low to read CKKS noise through the trainer's
    rounding; the trainer decrypts only at the scale evaluation gives."""
    # Prepare
    weights, x, _ = trained
    model = QuadMLP.from_weights(weights)
    encrypted = encrypt_model(key, model)
    query = evaluate(key.public(), EncryptedModel.parse(encrypted), x, 5)
    _, parts = ckks.unpack(encrypted, "model")
    header = {"kind": "model", "scheme": SCHEME.digest().hex(), "features": 64, "hidden": 64, "classes": 10}
    swapped = ckks.pack(header, [parts[70], *parts[1:70], parts[0], *parts[71:]])

    def low(ct: object) -> None:
        ct.scale = 2.0**10

    # Execute / Assert
    with pytest.raises(FheError, match=r"query: ciphertext 3 has scale 1024\.0, not the evaluation's"):
        decrypt_query(key, model, _retouched(query, 3, 3, key.context, low))
    with pytest.raises(FheError, match="ciphertext 0 does not load at level 0"):
        evaluate(key.public(), EncryptedModel.parse(swapped), x, 5)
    with pytest.raises(FheError, match=r"ciphertext 2 has scale 1024\.0"):
        evaluate(key.public(), EncryptedModel.parse(_retouched(encrypted, 2, 0, key.context, low)), x, 5)
