"""Run the CompensationPool invariant machine (``tests/test_invariants.py``) for many sequences.

Usage::

    .venv/bin/python bench/invariants.py --sequences 1000 [--steps 12] [--seed N | --derandomize]

Starts its own anvil node, deploys the pool, the token and the three campaigns once, then runs
:class:`tests.test_invariants.PoolMachine` for ``--sequences`` hypothesis examples of
``--steps`` steps (each example starts from the same ``evm_snapshot``). Prints a table: sequences
and steps executed (counted by the machine itself, so hypothesis's extra examples and, after a
failure, its shrinking runs are included), successful actions by kind, reverted actions by
custom-error name and by (kind, error), set-up and run wall time. Exits 1 on any invariant
violation or model disagreement (hypothesis prints the shrunk falsifying sequence first), 0
otherwise.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import test_invariants as inv  # noqa: E402


def _table(title: str, rows: list[tuple[str, int]], total: int | None = None) -> list[str]:
    lines = [title]
    width = max([len(k) for k, _ in rows] + [5])
    for key, value in rows:
        lines.append(f"  {key:<{width}}  {value:>7}")
    if total is not None:
        lines.append(f"  {'total':<{width}}  {total:>7}")
    return lines


def report(wall_s: float, setup_s: float, failure: BaseException | None) -> str:
    stats = inv.STATS
    ok_rows = sorted(stats.ok.items(), key=lambda kv: (-kv[1], kv[0]))
    rev_rows = sorted(stats.reverted.items(), key=lambda kv: (-kv[1], kv[0]))
    by_kind = sorted(((f"{k}: {e}", v) for (k, e), v in stats.reverted_by_kind.items()),
                     key=lambda kv: kv[0])
    tx_ok = sum(v for k, v in stats.ok.items() if k != "advance_time")
    tx_rev = sum(stats.reverted.values())
    per_step = 1000 * wall_s / stats.steps if stats.steps else 0.0
    lines = [
        "CompensationPool invariant machine (hypothesis stateful, real anvil node)",
        f"  sequences          {stats.sequences:>9}",
        f"  steps              {stats.steps:>9}   ({stats.steps / max(stats.sequences, 1):.1f} "
        f"per sequence)",
        f"  transactions       {tx_ok + tx_rev:>9}   ({tx_ok} accepted, {tx_rev} reverted as "
        f"predicted)",
        f"  claims+reclaims ok {stats.payouts:>9}",
        f"  set-up wall time   {setup_s:>9.1f} s",
        f"  run wall time      {wall_s:>9.1f} s   ({per_step:.2f} ms per step)",
        f"  result             {'FAIL: ' + type(failure).__name__ if failure else 'ok':>9}",
        "",
        *_table("successful actions by kind", ok_rows, sum(stats.ok.values())),
        "",
        *_table("successful actions of note (included above)",
                sorted(stats.cases.items(), key=lambda kv: kv[0])),
        "",
        *_table("reverted actions by error name", rev_rows, tx_rev),
        "",
        *_table("reverted actions by kind: error", by_kind),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=1000,
                        help="hypothesis examples (action sequences), default 1000")
    parser.add_argument("--steps", type=int, default=12,
                        help="steps per sequence (stateful_step_count), default 12")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seed", type=int, default=None,
                       help="seed Python's random module (hypothesis draws its seed from it)")
    group.add_argument("--derandomize", action="store_true",
                       help="hypothesis's fixed, derandomised search")
    args = parser.parse_args(argv)

    if args.seed is not None:
        random.seed(args.seed)
    inv.STATS.reset()
    start = time.perf_counter()
    inv.get_env()
    setup_s = time.perf_counter() - start

    failure: BaseException | None = None
    run_start = time.perf_counter()
    try:
        inv.run_machine(args.sequences, args.steps, derandomize=args.derandomize)
    except Exception as exc:  # the invariant violation, already printed by hypothesis
        failure = exc
    wall_s = time.perf_counter() - run_start
    try:
        print(report(wall_s, setup_s, failure))
        if failure is not None:
            # hypothesis attaches the shrunk falsifying sequence as exception notes
            notes = "\n".join(getattr(failure, "__notes__", []))
            print(f"\nINVARIANT VIOLATION: {type(failure).__name__}: {failure}\n{notes}")
    finally:
        inv.close_env()
    return 1 if failure is not None else 0


if __name__ == "__main__":
    sys.exit(main())
