"""The compiled contract: ABI and bytecode, committed as ``src/derelayl/evm/DeRelayL.json`` (package data).

Compiling takes seconds and needs vyper, so runs load the committed artifact; a test checks
that it is exactly what vyper 0.4.3 makes of ``contracts/DeRelayL.vy`` today (regenerate with
``python -m derelayl.evm.artifact``).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from derelayl.errors import ConfigError

__all__ = ["ARTIFACT", "SOURCE", "VYPER_VERSION", "compile_contract", "load_artifact"]

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / "contracts" / "DeRelayL.vy"
ARTIFACT = Path(__file__).with_name("DeRelayL.json")
VYPER_VERSION = "0.4.3"
EIP170_LIMIT = 24_576
"""Largest runtime bytecode Ethereum accepts (bytes)."""


def compile_contract(source: Path = SOURCE) -> dict[str, Any]:
    import vyper

    if vyper.__version__ != VYPER_VERSION:
        raise ConfigError(f"the contract is built with vyper {VYPER_VERSION}, found {vyper.__version__}")
    text = source.read_text()
    out = vyper.compile_code(text, output_formats=["abi", "bytecode", "bytecode_runtime"])
    runtime = bytes.fromhex(out["bytecode_runtime"].removeprefix("0x"))
    if len(runtime) > EIP170_LIMIT:
        raise ConfigError(f"runtime bytecode is {len(runtime)} bytes, above the EIP-170 limit of {EIP170_LIMIT}")
    return {
        "contract": "DeRelayL",
        "vyper": VYPER_VERSION,
        "source_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "runtime_bytes": len(runtime),
        "abi": out["abi"],
        "bytecode": out["bytecode"],
    }


@lru_cache(maxsize=1)
def load_artifact() -> dict[str, Any]:
    try:
        artifact: dict[str, Any] = json.loads(ARTIFACT.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{ARTIFACT}: no readable contract artifact (python -m derelayl.evm.artifact)") from exc
    return artifact


def main() -> None:
    artifact = compile_contract()
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(artifact, indent=1, sort_keys=True) + "\n")
    print(f"{ARTIFACT}: runtime {artifact['runtime_bytes']} bytes (limit {EIP170_LIMIT})")


if __name__ == "__main__":
    main()
