"""The compiled contracts: ABI and bytecode, committed as ``src/derelayl/evm/DeRelayL.json`` (package data).

The rules are two contracts over one storage (each must stay under EIP-170's 24,576 bytes):
``contracts/DeRelayL.vy``, the address everyone uses, and ``contracts/TestAndSettle.vy``, whose
code DeRelayL runs through DELEGATECALL for the calls it does not define (``post``, ``test``,
``settle``); both initialize the module ``contracts/rules.vy``. The artifact's ABI is the union,
since every call goes to DeRelayL's address.

Compiling takes seconds and needs vyper, so runs load the committed artifact; a test checks
that it is exactly what vyper 0.4.3 makes of ``contracts/`` today (regenerate with
``python -m derelayl.evm.artifact``).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from derelayl.errors import ConfigError

__all__ = ["ARTIFACT", "CONTRACTS", "SOURCES", "VYPER_VERSION", "compile_contract", "load_artifact"]

ROOT = Path(__file__).resolve().parents[3]
CONTRACTS = ROOT / "contracts"
SOURCES = (CONTRACTS / "DeRelayL.vy", CONTRACTS / "TestAndSettle.vy", CONTRACTS / "rules.vy")
"""The entry contract, the extension it delegates to, and the module both initialize."""
ARTIFACT = Path(__file__).with_name("DeRelayL.json")
VYPER_VERSION = "0.4.3"
EIP170_LIMIT = 24_576
"""Largest runtime bytecode Ethereum accepts (bytes)."""


def _compile(name: str, folder: Path) -> dict[str, Any]:
    from vyper.compiler import compile_from_file_input
    from vyper.compiler.input_bundle import FilesystemInputBundle

    bundle = FilesystemInputBundle([folder])
    out: dict[str, Any] = compile_from_file_input(
        bundle.load_file(Path(name)),
        input_bundle=bundle,
        output_formats=["abi", "bytecode", "bytecode_runtime", "layout"],
    )
    runtime = bytes.fromhex(out["bytecode_runtime"].removeprefix("0x"))
    if len(runtime) > EIP170_LIMIT:
        raise ConfigError(
            f"{name}: runtime bytecode is {len(runtime)} bytes, above the EIP-170 limit of {EIP170_LIMIT}"
        )
    out["runtime"] = runtime
    return out


def compile_contract(folder: Path = CONTRACTS) -> dict[str, Any]:
    import vyper

    if vyper.__version__ != VYPER_VERSION:
        raise ConfigError(f"the contract is built with vyper {VYPER_VERSION}, found {vyper.__version__}")
    main, ext = _compile("DeRelayL.vy", folder), _compile("TestAndSettle.vy", folder)
    # the delegation is only sound if both lay out storage the same way
    if main["layout"]["storage_layout"] != ext["layout"]["storage_layout"]:
        raise ConfigError("DeRelayL.vy and TestAndSettle.vy lay out storage differently")
    abi = list(main["abi"])
    abi += [entry for entry in ext["abi"] if entry not in abi and entry.get("type") in ("function", "event")]
    return {
        "contract": "DeRelayL",
        "vyper": VYPER_VERSION,
        "sources_sha256": {p.name: hashlib.sha256((folder / p.name).read_bytes()).hexdigest() for p in SOURCES},
        "runtime_bytes": {"DeRelayL": len(main["runtime"]), "TestAndSettle": len(ext["runtime"])},
        "abi": abi,
        "bytecode": main["bytecode"],
        "extension_bytecode": ext["bytecode"],
        "extension_runtime_keccak": "0x" + _keccak(ext["runtime"]).hex(),
    }


def _keccak(data: bytes) -> bytes:
    from eth_utils import keccak

    return bytes(keccak(data))


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
    sizes = ", ".join(f"{name} {size}" for name, size in artifact["runtime_bytes"].items())
    print(f"{ARTIFACT}: runtime bytes {sizes} (limit {EIP170_LIMIT} each)")


if __name__ == "__main__":
    main()
