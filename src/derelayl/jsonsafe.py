"""JSON from outside, parsed with a bound on nesting.

``json.loads`` recurses in C once per level and relies on Python's recursion limit to stop;
py-evm (the embedded EVM) raises that limit to 100,000 for the whole process, after which a
body nested 100,000 deep overflows the C stack and kills the process (found by the fuzzer:
a crafted chain block segfaulted the test suite once py-evm had been imported). So the depth
is measured first, without recursion.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_DEPTH", "loads", "nesting"]

MAX_DEPTH = 64
"""Deeper than anything derelayl writes (blocks, messages, records nest fewer than 8 levels)."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def nesting(data: bytes | str) -> int:
    """How deeply brackets nest in ``data``, strings left out (an upper bound on JSON depth)."""
    raw = data.encode(errors="surrogatepass") if isinstance(data, str) else bytes(data)
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub(b"", raw)):
        depth += 1 if bracket in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    return deepest


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads``, refusing (``json.JSONDecodeError``) JSON nested deeper than ``max_depth``."""
    if nesting(data) > max_depth:
        raise json.JSONDecodeError(f"JSON nested deeper than {max_depth}", "", 0)
    return json.loads(data)
