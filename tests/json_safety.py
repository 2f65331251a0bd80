"""What a JavaScript client can read exactly: checks shared by the tests of issue 13.

``JSON.parse`` turns every JSON number into an IEEE double, so an integer at or above 2⁵³ comes
back rounded (208873506586492146964 → 208873506586492141568). The rule the node and the API
follow (:mod:`offchain.allocation.wei`): every wei amount and every uint256 that can exceed 2⁵³
is a decimal string.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JS_SAFE = 2**53

def unsafe_for_javascript(value: Any, where: str = "$") -> list[str]:
    """Every place in ``value`` (parsed JSON) a JavaScript client would misread: an integer
    with ``|n| ≥ 2**53``, or a wei field (the project names them ``*_wei``) that is not a
    decimal string (or null)."""
    problems: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}"
            if key.endswith("_wei") and not (
                item is None or (isinstance(item, str) and item.isdigit())
            ):
                problems.append(f"{here}: wei field is {type(item).__name__} {item!r}, not a "
                                "decimal string")
            problems += unsafe_for_javascript(item, here)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems += unsafe_for_javascript(item, f"{where}[{i}]")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= JS_SAFE:
        problems.append(f"{where}: integer {value} ≥ 2**53 (JSON.parse rounds it)")
    return problems


def json_artifacts(run_dir: Path) -> dict[Path, Any]:
    """Every ``*.json`` file under ``run_dir``, parsed (the compiler cache and the model's
    configs included: they must be safe too)."""
    return {p: json.loads(p.read_text()) for p in sorted(Path(run_dir).rglob("*.json"))}


def js_parse(text: str) -> Any:
    """``JSON.parse`` as JavaScript does it: every number becomes a double."""
    return json.loads(text, parse_int=lambda s: int(float(s)))
