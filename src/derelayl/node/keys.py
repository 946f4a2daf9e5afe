"""A node's key file: one secp256k1 private key, made here and never derived from a shared
seed (``derelayl keys new``). The file is created exclusively (never overwritten) with mode
0600 and holds JSON ``{"address": ..., "secret": ...}``."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from derelayl import jsonsafe
from derelayl.errors import ConfigError
from derelayl.evm.signing import EvmKey

__all__ = ["load_key", "new_key"]


def new_key(path: Path) -> EvmKey:
    """A fresh random key written to ``path`` (refused if the file exists)."""
    while True:
        try:
            key = EvmKey(secrets.token_bytes(32))
            break
        except ConfigError:  # a 2**-128 chance of an out-of-range number
            continue
    record = json.dumps({"address": key.address, "secret": key.secret.hex()}) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists: a key file is never overwritten") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {path} ({exc.strerror})") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(record)
        fh.flush()
        os.fsync(fh.fileno())
    return key


def load_key(path: Path) -> EvmKey:
    """The key in ``path``; a missing, unreadable or malformed file is a ``ConfigError``."""
    try:
        data = jsonsafe.loads(path.read_text())
        key = EvmKey(bytes.fromhex(data["secret"]))
    except FileNotFoundError:
        raise ConfigError(f"no key file at {path} (create one with: derelayl keys new {path})") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a key file") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a derelayl key file ({type(exc).__name__})") from None
    if data.get("address") != key.address:
        raise ConfigError(f"{path}: the address does not belong to the secret")
    return key
