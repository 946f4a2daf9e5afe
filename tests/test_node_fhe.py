"""Encrypted scoring's two endpoints on a real node (uvicorn on loopback, anvil): what they
serve and what they refuse. The whole exchange between nodes is the devnet test
``test_the_defences_run_on_the_network_as_in_process[encrypted-scoring]``."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("tenseal")

from derelayl.evm.node import anvil_path
from derelayl.evm.signing import EvmKey, EvmSigner
from derelayl.learning.serialization import weights_to_bytes
from derelayl.node.api import make_app
from derelayl.node.core import Node
from derelayl.node.fhe import MAX_QUERY_BYTES
from derelayl.node.runner import DataSpec
from derelayl.node.wire import FetchRequest
from derelayl.protocol.types import Phase
from served import node_on_anvil, serve

N, SEED = 4, 7
SPEC = DataSpec(0, N, SEED, fhe=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, httpx.Client, list[EvmKey], bytes]]:
    if anvil_path() is None:
        pytest.skip("needs anvil (scripts/setup with npm)")
    with contextlib.ExitStack() as stack:
        _, keys, _, node = node_on_anvil(stack, "node-fhe", SPEC, SEED, tmp_path_factory.mktemp("fhe-node"))
        assert node.fhe is not None and node.brain.fhe is not None
        # participant 0 encrypts a model of its own, as it does when it commits
        weights = node.models.load(node.models.index[0])
        plain = node.models.store.put(weights_to_bytes(weights, {"test": 1}))
        commitment, _ = node.brain.fhe.commit(0, weights, plain)
        http = serve(stack, make_app(node))
        node.sync()
        yield node, http, keys, commitment


def test_encrypted_models_and_keys_are_served_to_anyone_and_hash_to_their_name(served) -> None:
    node, http, _, commitment = served
    assert node.brain.fhe is not None
    manifest = node.brain.fhe.manifest(commitment)
    assert manifest is not None
    for name in ("ciphertext", "key"):
        answer = http.get(f"/fhe/{manifest[name]}")
        assert answer.status_code == 200
        assert hashlib.sha256(answer.content).hexdigest() == manifest[name]
    missing = http.get(f"/fhe/{'ab' * 32}")
    assert missing.status_code == 404 and "holds no encrypted model" in missing.json()["error"]
    assert http.get("/fhe/xyz").status_code == 400
    assert http.get(f"/fhe/{manifest['model']}").status_code == 404  # the model file is not served here


def _headers(node: Node, key: EvmKey, digest: bytes) -> dict[str, str]:
    return FetchRequest.make(EvmSigner(key, node.client.history.domain), node.view.round, digest).headers()


def test_a_decryption_the_chain_does_not_entitle_is_refused(served) -> None:
    node, http, keys, commitment = served
    before = node.stats["fhe_answers"]
    cases = [
        ({}, b"q", 400, "X-Round"),  # unsigned
        (_headers(node, keys[1], commitment), b"q", 403, "does not entitle"),  # not a tester of a committed model
        (_headers(node, keys[1], commitment), b"x" * (MAX_QUERY_BYTES + 1), 413, "at most"),
    ]
    for headers, body, status, reason in cases:
        answer = http.post(f"/fhe/decrypt/{commitment.hex()}", headers=headers, content=body)
        assert answer.status_code == status and reason in answer.json()["error"], answer.text
    assert http.post(f"/fhe/decrypt/{'zz' * 32}", headers={}, content=b"").status_code == 400
    assert node.stats["fhe_answers"] == before
    assert http.get("/status").status_code == 200


def test_a_tester_entitled_to_a_commitment_gets_its_manifest_but_never_the_clear_model(served) -> None:
    # Prepare: the chain entitles participant 1 to score participant 0's encrypted commitment
    # (as in a test phase in which 1 is a tester); the clear model file the manifest names is
    # in the node's store (the trainer trained it)
    node, http, keys, commitment = served
    assert node.brain.fhe is not None
    manifest = node.brain.fhe.manifest(commitment)
    assert manifest is not None
    real = node.view
    node.view = dataclasses.replace(real, phase=Phase.TEST, entitled={commitment: frozenset({1})})
    try:
        # Execute: the tester asks for the manifest, then for the model file it names
        got = http.get(f"/models/{commitment.hex()}", headers=_headers(node, keys[1], commitment))
        plain = bytes.fromhex(manifest["model"])
        leak = http.get(f"/models/{plain.hex()}", headers=_headers(node, keys[1], plain))
    finally:
        node.view = real
    # Assert: the manifest (digests and keys' names) is served; the weights are not
    assert got.status_code == 200 and hashlib.sha256(got.content).digest() == commitment
    assert leak.status_code == 403 and "does not entitle" in leak.json()["error"], leak.text


def test_a_requester_gets_one_query_per_commitment_and_round_answered(served) -> None:
    # Prepare: participant 1 entitled to participant 0's commitment (a tester); two queries
    # on different cases, each a real evaluation of the encrypted model
    import numpy as np

    from derelayl.fhe.ckks import EncryptedModel
    from derelayl.fhe.query import evaluate

    node, http, keys, commitment = served
    scoring = node.brain.fhe
    assert scoring is not None
    manifest = scoring.manifest(commitment)
    assert manifest is not None
    public = scoring.store.get(bytes.fromhex(manifest["key"]))
    model = EncryptedModel.parse(scoring.store.get(bytes.fromhex(manifest["ciphertext"])))
    rng = np.random.default_rng(0)
    first, second = (evaluate(public, model, rng.normal(size=(4, model.features)), 3) for _ in range(2))
    real = node.view
    node.view = dataclasses.replace(real, phase=Phase.TEST, entitled={commitment: frozenset({1})})
    try:
        # Execute: the first query, the same query again (a retry), then another one
        asks = [
            http.post(f"/fhe/decrypt/{commitment.hex()}", headers=_headers(node, keys[1], commitment), content=q)
            for q in (first, first, second)
        ]
    finally:
        node.view = real
    # Assert: the first is answered, its retry too (the same reply), the other query refused
    assert asks[0].status_code == 200 and asks[1].content == asks[0].content
    assert asks[2].status_code == 403 and "one query per commitment" in asks[2].json()["error"], asks[2].text
