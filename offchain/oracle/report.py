"""What a person sees of a campaign: a per-round table on the terminal and a payments plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from offchain.allocation.wei import WEI_PER_TOKEN, parse_wei
from offchain.layout import RoundPaths
from offchain.utils import atomic_write, read_json

__all__ = [
    "credits_line",
    "format_tokens",
    "payments_plot",
    "prompts_line",
    "round_table",
    "summary_table",
]

PROMPTS_SHOWN = 4
"""Prompts of the round's generations the round table names (``prompts.json``'s first)."""

def format_tokens(amount_wei: int, decimals: int = 18, places: int = 4) -> str:
    """``amount_wei`` as a decimal token amount, rounded down to ``places`` digits (display only)."""
    whole, frac = divmod(int(amount_wei), 10**decimals)
    frac_digits = str(frac).rjust(decimals, "0")[:places]
    return f"{whole:,}.{frac_digits}"


def prompts_line(paths: RoundPaths, shown: int = PROMPTS_SHOWN) -> str | None:
    """``Generations from: "a", "b", … (M prompts; grid in generations.png)`` for a round with
    a recorded prompt set (``prompts.json``), else None."""
    if not paths.prompts.exists():
        return None
    prompts = read_json(paths.prompts)
    quoted = ", ".join(f'"{p}"' if p else "(no caption)" for p in prompts[:shown])
    more = ", …" if len(prompts) > shown else ""
    return (f"Generations from: {quoted}{more} ({len(prompts)} prompts; grid in "
            f"{paths.generations_png.name})")


def credits_line(holders: Sequence[dict]) -> str | None:
    """``Credits: <attribution> (<holders>); …``: each attribution text the holders' licences
    require, once, with the holders it covers; None when no holder states one."""
    by_text: dict[str, list[str]] = {}
    for holder in holders:
        if holder.get("attribution"):
            by_text.setdefault(holder["attribution"], []).append(holder["name"])
    if not by_text:
        return None
    return "Credits: " + "; ".join(
        f"{text} ({', '.join(names)})" for text, names in by_text.items()
    )


def round_table(paths: RoundPaths) -> Table:
    """One row per holder: images, participated, contribution, copyright loss, payment,
    claimed, and the licence where any holder states one; the caption names a few prompts of
    the round's generations (:func:`prompts_line`) and the attribution each licence requires
    (:func:`credits_line`)."""
    manifest = read_json(paths.manifest)
    contributions = read_json(paths.contributions)
    copyright_ = read_json(paths.copyright)
    allocation = read_json(paths.allocation)
    claims = read_json(paths.claims) if paths.claims.exists() else {"claims": []}
    claimed = {c["index"]: c for c in claims["claims"]}
    decision = read_json(paths.decision)
    quality = (
        f", FID {read_json(paths.quality)['fid']:.1f}" if paths.quality.exists() else ""
    )
    table = Table(
        title=(
            f"Round {paths.round_id}: budget "
            f"{format_tokens(parse_wei(allocation['budget_wei'], 'budget_wei'))} TST "
            f"({decision['policy']}), root {str(allocation['merkle_root'])[:10]}…{quality}"
        )
    )
    licensed = any(h.get("licence") or h.get("attribution") for h in manifest["holders"])
    table.caption = "\n".join(
        line for line in (prompts_line(paths), credits_line(manifest["holders"])) if line
    )
    for column, justify in [
        ("holder", "left"),
        ("images", "right"),
        ("participated", "center"),
        ("contribution", "right"),
        ("copyright loss", "right"),
        ("payment (TST)", "right"),
        ("claimed", "center"),
        *([("licence", "left")] if licensed else []),
    ]:
        # a narrow terminal folds holder names onto two lines rather than cutting them short
        table.add_column(column, justify=justify,  # type: ignore[arg-type]
                         overflow="fold" if column == "holder" else "ellipsis")
    for i, holder in enumerate(manifest["holders"]):
        amount = parse_wei(allocation["holders"][i]["amount_wei"], "amount_wei")
        claim = claimed.get(holder["index"])
        licence = [holder.get("licence") or "—"]
        table.add_row(
            holder["name"],
            str(holder["n_images"]),
            "yes" if holder["participating"] else "no",
            f"{contributions['normalized'][i]:.3f}",
            f"{copyright_['loss'][i]:.3f}",
            format_tokens(amount),
            "—" if amount == 0 else ("yes" if claim and claim["ok"] else "no"),
            *(licence if licensed else []),
        )
    return table


def summary_table(
    names: Sequence[str],
    reservation_prices_wei: Sequence[int],
    paid_wei: Sequence[int],
    balances_wei: Sequence[int],
    stayed: Sequence[bool],
) -> Table:
    """Campaign totals per holder: price, total allocated, on-chain balance, still participating."""
    table = Table(title="Campaign summary")
    for column in ("holder", "price/round (TST)", "allocated (TST)", "on-chain balance (TST)",
                   "balance = allocated", "still in"):
        table.add_column(column, justify="right" if "TST" in column else "left")
    for name, price, paid, balance, stay in zip(
        names, reservation_prices_wei, paid_wei, balances_wei, stayed, strict=True
    ):
        table.add_row(
            name,
            format_tokens(price),
            format_tokens(paid),
            format_tokens(balance),
            "yes" if paid == balance else "NO",
            "yes" if stay else "no",
        )
    return table


def payments_plot(run_dir: Path, round_ids: Sequence[int], out: Path | None = None) -> Path:
    """Grouped bar chart of each holder's payment (tokens) per round, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    allocations = [read_json(RoundPaths(run_dir, r).allocation) for r in round_ids]
    names = [h["name"] for h in allocations[0]["holders"]]
    width = 0.8 / len(allocations)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) + 2), 4))
    for k, alloc in enumerate(allocations):
        tokens = [parse_wei(h["amount_wei"], "amount_wei") / WEI_PER_TOKEN
                  for h in alloc["holders"]]
        ax.bar(x + (k - (len(allocations) - 1) / 2) * width, tokens, width,
               label=f"round {alloc['round_id']}")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("payment (tokens)")
    ax.set_title("Payment per holder per round")
    ax.legend()
    fig.tight_layout()
    target = out or Path(run_dir) / "payments.png"
    atomic_write(target, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return target


def print_round(console: Console, paths: RoundPaths) -> None:
    """Print :func:`round_table` of ``paths``."""
    console.print(round_table(paths))
