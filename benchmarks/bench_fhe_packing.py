"""A layout not built yet, measured: k weight columns per ciphertext, folded by rotations.

Today's layout (``fhe/ckks.py``, layout 2) tiles each weight column of layer 1 once per case
block: 65 ciphertexts for layer 1 and 10 for layer 2, 12 MB per model. Packing ``k`` columns
into one ciphertext (``k`` blocks of ``4096 / k`` slots, each holding its column tiled over
``64 / k`` cases) divides the ciphertexts the trainer encrypts by about ``k``. The tester then
needs ``log2 k`` rotations per batch to add the ``k`` blocks' partial sums before the
activation, and ``k`` times as many batches, each with its own activation; layer 2 packs ``k``
classes per ciphertext in the same way. The rotations need Galois keys for ``log2 k`` steps
only (not all of them), which a tester would receive with the trainer's public key.

This script runs the whole exchange on SEAL's API for k = 1 (today's layout) to 16 on a random
64-64-10 quadratic MLP and 100 cases, checks the logits against the clear model, and prints,
per k, the best of ``--repeats`` runs: ciphertexts, encryption time, model bytes, Galois key
time, evaluation time (cases already encoded), query bytes, decryption time, the largest logit
error and prediction agreement. Run: ``python benchmarks/bench_fhe_packing.py``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from derelayl.fhe.ckks import QUAD, SCHEME, KeyPair
from derelayl.fhe.seal import Scratch

F, H, C, N_CASES = 64, 64, 10, 100


def galois_element(step: int) -> int:
    """SEAL's Galois element for a left rotation of the CKKS slots by ``step`` (generator 3)."""
    return pow(3, step, 2 * SCHEME.poly_modulus_degree)


def run(k: int, key: KeyPair, rng: np.random.Generator) -> dict[str, float]:
    import tenseal.sealapi as sa

    seal, slots = key.seal, SCHEME.slots
    w1, b1 = rng.normal(0, 0.2, (H, F)), rng.normal(0, 0.1, H)
    w2, b2 = rng.normal(0, 0.3, (C, H)), rng.normal(0, 0.1, C)
    x = rng.uniform(0, 1, (N_CASES, F))
    h_clear = x @ w1.T + b1
    clear = (QUAD[0] + QUAD[1] * h_clear + QUAD[2] * h_clear**2) @ w2.T + b2
    width = slots // k  # slots per block
    per = width // H  # cases per ciphertext
    steps = [width << j for j in range(k.bit_length() - 1)]
    galois = sa.GaloisKeys()
    t = time.perf_counter()
    if steps:
        sa.KeyGenerator(seal.context, key.context.data.secret_key()).create_galois_keys(
            [galois_element(s) for s in steps], galois
        )
    t_galois = time.perf_counter() - t
    columns = [*w1.T, b1]
    groups = [columns[g : g + k] for g in range(0, len(columns), k)]
    out: dict[str, float] = {"k": k, "galois_ms": 1e3 * t_galois}
    with Scratch() as io:
        t = time.perf_counter()
        layer1, layer2 = [], []
        for group in groups:
            v = np.zeros(slots)
            for j, col in enumerate(group):
                v[j * width : (j + 1) * width] = np.tile(col, per)
            layer1.append(seal.encrypt(v, 0, SCHEME.scale, io))
        for g in range(0, C, k):
            v = np.zeros(slots)
            for j, c in enumerate(range(g, min(C, g + k))):
                v[j * width : (j + 1) * width] = np.tile(QUAD[2] * w2[c], per)
            layer2.append(seal.encrypt(v, 2, SCHEME.scale, io))
        out["encrypt_ms"] = 1e3 * (time.perf_counter() - t)
        out["ciphertexts"] = len(layer1) + len(layer2)
        out["model_mb"] = sum(map(len, layer1 + layer2)) / 1e6
        l1 = [seal.load(p, 0, io) for p in layer1]
        l2 = [seal.load(p, 2, io) for p in layer2]
        xs = np.hstack([x, np.ones((N_CASES, 1))])
        batches = []
        for start in range(0, N_CASES, per):
            xb = np.zeros((per, F + 1))
            xb[: len(xs[start : start + per])] = xs[start : start + per]
            terms = []
            for gi, group in enumerate(groups):
                v = np.zeros(slots)
                for j in range(len(group)):
                    v[j * width : (j + 1) * width] = np.repeat(xb[:, gi * k + j], H)
                terms.append((gi, seal.encode(v, 0, SCHEME.scale)))
            batches.append(terms)
        t = time.perf_counter()
        products, query_bytes = [], 0
        for terms in batches:
            h = seal.dot_plain([(l1[i], plain) for i, plain in terms])
            for s in steps:  # fold the k blocks' partial sums: every block ends with the total
                r = sa.Ciphertext()
                seal.evaluator.rotate_vector(h, s, galois, r)
                seal.evaluator.add_inplace(h, r)
            act = seal.square_affine(h, QUAD[1] / QUAD[2], QUAD[0] / QUAD[2])
            row = [seal.multiply_add(r, act, np.zeros(slots)) for r in l2]
            query_bytes += sum(len(io.save(p)) for p in row)
            products.append(row)
        out["evaluate_ms"] = 1e3 * (time.perf_counter() - t)
        out["query_mb"] = query_bytes / 1e6
        t = time.perf_counter()
        logits = np.zeros((len(batches) * per, C))
        for b, row in enumerate(products):
            for g, p in enumerate(row):
                v = seal.decrypt(p).reshape(k, per, H)
                for j in range(k):
                    if g * k + j < C:
                        logits[b * per : (b + 1) * per, g * k + j] = v[j].sum(axis=1) + b2[g * k + j]
        out["decrypt_ms"] = 1e3 * (time.perf_counter() - t)
    out["max_error"] = float(np.abs(logits[:N_CASES] - clear).max())
    out["agreement"] = float((logits[:N_CASES].argmax(1) == clear.argmax(1)).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--packs", default="1,2,4,8,16", help="values of k (powers of two)")
    args = parser.parse_args()
    key = KeyPair.generate()
    print("k  ciphertexts  encrypt ms  model MB  galois ms  evaluate ms  query MB  decrypt ms  max error  agree")
    for k in (int(v) for v in args.packs.split(",")):
        if k < 1 or k & (k - 1) or k > 64:
            raise SystemExit(f"error: --packs takes powers of two 1..64, got {k}")
        runs = [run(k, key, np.random.default_rng(0)) for _ in range(max(1, args.repeats))]
        best = {m: min(r[m] for r in runs) for m in ("encrypt_ms", "evaluate_ms", "decrypt_ms", "galois_ms")}
        r = runs[0] | best
        print(
            f"{k:<3}{r['ciphertexts']:>11.0f}{r['encrypt_ms']:>12.0f}{r['model_mb']:>10.2f}{r['galois_ms']:>11.0f}"
            f"{r['evaluate_ms']:>13.0f}{r['query_mb']:>10.2f}{r['decrypt_ms']:>12.0f}{r['max_error']:>11.1e}"
            f"{r['agreement']:>7.2f}"
        )


if __name__ == "__main__":
    main()
