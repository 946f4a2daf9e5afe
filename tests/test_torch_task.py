"""``derelayl run --task digits``: a resumed run (killed between any two blocks) ends with the
same chain head as an uninterrupted one; results folder with figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from derelayl.errors import ModelError
from derelayl.protocol.state import State
from derelayl.runtime.local import RunConfig, Task, run_network
from derelayl.runtime.torch_task import TorchTask

CONFIG = RunConfig(participants=6, rounds=3, seed=4, task="digits", preset="minimal")


class Crash(Exception):
    pass


def crashing_after(blocks: int):  # type: ignore[no-untyped-def]
    """A task whose process dies right after the ``blocks``-th block is stored."""
    made = {"n": 0}

    class Crashing(TorchTask):
        def follow(self, state: State) -> None:
            super().follow(state)
            made["n"] += 1
            if made["n"] == blocks:
                raise Crash

    def factory(config: RunConfig, out_dir: Path) -> Task:
        return Crashing(config, out_dir)

    return factory


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full")
    run_network(CONFIG, out, TorchTask)
    return out


@pytest.fixture(scope="module")
def uninterrupted(full_dir: Path) -> dict[str, object]:
    return json.loads((full_dir / "summary.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("crash_after", [2, 7])  # after a commit block; after a test block
def test_resume_after_crash_gives_the_same_head(
    tmp_path: Path, crash_after: int, uninterrupted: dict[str, object]
) -> None:
    # Prepare: a run killed mid-round
    with pytest.raises(Crash):
        run_network(CONFIG, tmp_path, crashing_after(crash_after))
    # Execute: a new process (new task object) resumes from the stored chain and models
    summary = run_network(CONFIG, tmp_path, TorchTask)
    # Assert
    assert summary["resumed_from_height"] == 1 + crash_after
    assert summary["head_hash"] == uninterrupted["head_hash"]
    assert summary["best_model_digest"] == uninterrupted["best_model_digest"]


def test_results_folder(uninterrupted: dict[str, object], tmp_path: Path) -> None:
    assert uninterrupted["task"] == "digits"
    assert len(uninterrupted["accuracy_per_round"]) == CONFIG.rounds + 1  # genesis + each settled round
    assert 0.0 <= float(uninterrupted["best_test_accuracy"]) <= 1.0  # type: ignore[arg-type]
    assert uninterrupted["figures"] == ["digits.png"]


def test_split_written_for_other_frameworks(tmp_path: Path) -> None:
    run_network(RunConfig(participants=4, rounds=1, seed=1, task="digits", preset="minimal"), tmp_path, TorchTask)
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["dataset"] == "digits" and len(split["participants"]) == 4
    assert (tmp_path / "digits.png").exists() and len(list((tmp_path / "models").glob("*.safetensors"))) > 1


def test_corrupted_model_file_stops_a_resumed_run(full_dir: Path, tmp_path: Path) -> None:
    # Prepare: flip one byte of the model the next round's trainers must start from
    out = tmp_path / "run"
    shutil.copytree(full_dir, out)
    digest = json.loads((out / "summary.json").read_text())["best_model_digest"]
    path = out / "models" / f"{digest}.safetensors"
    raw = bytearray(path.read_bytes())
    raw[100] ^= 1
    path.write_bytes(bytes(raw))
    longer = RunConfig(**{**CONFIG.__dict__, "rounds": CONFIG.rounds + 1})
    # Execute / Assert
    with pytest.raises(ModelError, match=f"model file {digest} is corrupted"):
        run_network(longer, out, TorchTask)
