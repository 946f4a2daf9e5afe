"""Encrypted scoring (issue 11). Prints figures and ratios; asserts nothing.

1. One model: the reference MLP (64-64-10, quad activation) trained on digits, scored on 100
   test cases under CKKS: time of each step, bytes of each object, and agreement with
   scoring the same model in the clear. Also the model family's cost: the same MLP with
   ReLU, trained the same way, in the clear.
2. Rounds: ``derelayl run --fhe on`` (digits, 20 participants) for ``--rounds`` rounds,
   every encrypted score also computed in the clear (measurement only): per round, whether
   the tester's ranking of the models is the same, and the accuracy difference.
3. Time per round: the same run with ``--fhe off`` (ReLU, the reference) and ``--fhe on``,
   in this process, rounds 2.. (round 1 pays the set-up), and where the FHE time goes.

Run: python benchmarks/bench_fhe.py [--rounds 20] [--only model|rounds]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from derelayl.fhe.ckks import EncryptedModel, KeyPair, QuadMLP, encrypt_model
from derelayl.fhe.query import Cases, decrypt_query, evaluate, logits_from_reply
from derelayl.learning.setup import build_setup
from derelayl.learning.torch_models import TrainConfig
from derelayl.runtime.local import RunConfig, run_network
from derelayl.runtime.torch_task import TorchTask


def _timed(fn: Any, repeat: int = 5) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def one_model() -> None:
    torch.set_num_threads(1)
    print("== one model: 64-64-10 quad MLP, 100 test cases ==")
    accs = {}
    for activation in ("quad", "relu"):
        setup = build_setup("digits", participants=20, activation=activation, train_config=TrainConfig(lr=0.05))
        x, y = setup.train_pool()
        weights = setup.trainer(TrainConfig(lr=0.05, local_epochs=30)).train(setup.init, x, y, seed=0)
        accs[activation] = setup.test_accuracy(setup.evaluator(), weights)
        if activation == "quad":
            model, xt, yt = QuadMLP.from_weights(weights), setup.x_test[:100], setup.y_test[:100]
    print(f"clear test accuracy after 30 epochs centralized: quad {accs['quad']:.3f}, relu {accs['relu']:.3f}")
    t_key, key = _timed(KeyPair.generate)
    public = key.public()
    t_enc, encrypted = _timed(lambda: encrypt_model(key, model), 3)
    parsed = EncryptedModel.parse(encrypted)
    t_eval, query = _timed(lambda: evaluate(public, parsed, xt, 7), 3)
    t_cases, cases = _timed(lambda: Cases.encode(xt, parsed.features, parsed.hidden), 3)
    t_again, again = _timed(lambda: evaluate(public, parsed, xt, 7, cases), 3)
    assert again == query
    t_dec, reply = _timed(lambda: decrypt_query(key, model, query))
    logits = logits_from_reply(reply, 7, len(yt), parsed.hidden)
    clear = model.logits(xt)
    enc_right, clear_right = int((logits.argmax(1) == yt).sum()), int((clear.argmax(1) == yt).sum())
    plain_bytes = sum(a.size for a in (model.w1, model.b1, model.w2, model.b2)) * 4
    print(
        f"keygen {t_key * 1e3:.0f} ms; encrypt {t_enc * 1e3:.0f} ms; evaluate (tester) {t_eval * 1e3:.0f} ms; "
        f"decrypt (trainer) {t_dec * 1e3:.1f} ms"
    )
    print(
        f"evaluate: encoding the cases {t_cases * 1e3:.0f} ms; with the cases already encoded (a round's other "
        f"models) {t_again * 1e3:.0f} ms ({t_again / t_eval:.2f}x)"
    )
    print(
        f"bytes: model in the clear {plain_bytes:,}; encrypted {len(encrypted):,} "
        f"({len(encrypted) / plain_bytes:.0f}x); public key {len(public):,}; query {len(query):,}; "
        f"reply {reply.size * 8:,}"
    )
    agree = (logits.argmax(1) == clear.argmax(1)).mean()
    print(
        f"score: encrypted {enc_right}/100, clear {clear_right}/100; max |logit error| "
        f"{np.abs(logits - clear).max():.2e}; predictions agree on {agree:.0%}"
    )


def _run(fhe: bool, rounds: int, out: Path) -> tuple[list[float], Any]:
    tasks: list[TorchTask] = []

    def factory(config: RunConfig, out_dir: Path) -> TorchTask:
        task = TorchTask(config, out_dir)
        if task.fhe is not None:
            task.fhe.measure_clear = True
        tasks.append(task)
        return task

    stamps = [time.perf_counter()]
    per_round: list[list[tuple[bytes, int, int, float]]] = []

    def on_round(state: Any, _line: str) -> None:
        stamps.append(time.perf_counter())
        if tasks[0].fhe is not None:
            done = sum(len(r) for r in per_round)
            per_round.append(tasks[0].fhe.agreement[done:])

    run_network(RunConfig(participants=20, rounds=rounds, seed=3, task="digits", fhe=fhe), out, factory, on_round)
    return [b - a for a, b in itertools.pairwise(stamps)], (tasks[0], per_round)


def rounds(n: int) -> None:
    print(f"\n== {n} rounds of derelayl run (digits, 20 participants, seed 3) ==")
    with tempfile.TemporaryDirectory() as tmp:
        clear_times, _ = _run(False, n, Path(tmp) / "clear")
        fhe_times, (task, per_round) = _run(True, n, Path(tmp) / "fhe")
    same, diffs, errs, models = 0, [], [], 0
    for entries in per_round:
        enc = np.array([e[1] for e in entries])
        clear = np.array([e[2] for e in entries])
        models += len(entries)
        same += bool(np.array_equal(np.argsort(-enc, kind="stable"), np.argsort(-clear, kind="stable")))
        diffs += list(np.abs(enc - clear))
        errs += [e[3] for e in entries]
    print(
        f"rounds with the same ranking: {same}/{len(per_round)} ({same / len(per_round):.0%}); "
        f"models scored {models}; |encrypted - clear| accuracy: mean {np.mean(diffs):.2f} pp, max {max(diffs)} pp "
        f"(100 cases); max logit error {max(errs):.1e}"
    )
    c, f = statistics.mean(clear_times[1:]), statistics.mean(fhe_times[1:])
    print(f"time per round (rounds 2..{n}): clear {c:.2f} s, fhe {f:.2f} s: {f / c:.1f}x")
    total = sum(fhe_times)
    for part, secs in task.fhe.seconds.most_common():
        print(f"  fhe {part:9s} {secs:6.1f} s ({secs / total:.0%} of the run)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--only", choices=("model", "rounds"))
    args = parser.parse_args()
    if args.only in (None, "model"):
        one_model()
    if args.only in (None, "rounds"):
        rounds(args.rounds)


if __name__ == "__main__":
    main()
