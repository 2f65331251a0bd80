#!/usr/bin/env python3
"""Gas benchmark of ``CompensationPool`` against a Uniswap-style ``MerkleDistributor``.

Run from the project root (needs the chain extra, node_modules and a Solidity compiler, exactly
like the chain tests)::

    .venv/bin/python bench/gas.py                      # trees of 2, 16, 1k, 100k and 1M leaves
    .venv/bin/python bench/gas.py --max-leaves 100000  # quick run: skip the 1M tree
    .venv/bin/python bench/gas.py --markdown runs/gas.md   # also write the tables as Markdown
    .venv/bin/python bench/gas.py --settle-rounds 0        # skip the 1,000-round settlement

What it does, on a fresh local anvil (:class:`offchain.chain.AnvilNode`, default hardfork) with
every contract under ``contracts/`` compiled by :func:`offchain.chain.compile_contracts`:

1. Builds a real :class:`~offchain.allocation.merkle.PayoutTree` (OpenZeppelin
   StandardMerkleTree) of each size and times the build, every proof and a sample of
   verifications; reports the peak RSS of the process.
2. For each size, deploys fresh campaigns on one pool and measures, from the receipts' ``gasUsed``:
   ``createCampaign``; ``fund`` (ERC-20 first, top-up, a second sponsor; native ETH first and
   top-up); ``postRound`` with k = 1, 3, 5 of 5 signers (and a later round); ``finalizeRound``;
   ``claim`` and ``claimRounds`` with 1 and 10 rounds in two cases; ``reclaim`` (the first settles
   the campaign, the second is another sponsor). Posting does not depend on the tree: the table
   shows the spread across sizes, and the execution gas (gas used minus the intrinsic 21,000 +
   calldata) so that calldata zero bytes of different roots do not hide it.
3. Claims, two cases:
   - case A: the first claim in a fresh claimed-bitmap word, paid to an address that has never
     held the token (two zero → non-zero storage writes: bitmap word and token balance);
   - case B: a later claim in an already used word, paid to an address that already holds the
     token (both writes non-zero → non-zero).
   The claimed leaves are ones with the longest proof of their tree, ceil(log2 n).
4. The reference (``contracts/reference/MerkleDistributorReference.sol``) is measured at the SAME
   proof length for the same two cases and the same index and amount. Its tree is synthesised:
   two sibling leaves in the reference format ``keccak256(abi.encodePacked(index, account,
   amount))`` plus ``L - 1`` random 32-byte siblings folded up to a root. For gas this is
   equivalent to a full tree of the same depth: verification costs one sorted-pair keccak per
   proof element whatever the other nodes are, and the calldata is ``L`` non-zero 32-byte words
   either way.
5. Traces the single claims (``debug_traceTransaction``) and splits their gas into intrinsic,
   calldata, SLOAD, SSTORE, KECCAK256, LOG, transient storage (reentrancy guard), the token call
   and the rest, to show where our extra gas goes.
6. The functions of the independent review (issue 13, items 17–23) on their own campaign:
   revoking below the latest round and the latest one, posting into the gap, the two-step
   signer rotation (propose, cancel, execute), the two-step admin and guardian handovers, a
   relayed ``claimRoundsTo`` with a nonced authorisation, ``cancelRecipientAuthorizations``,
   ``reclaimTo``, and the first ``reclaim`` of a campaign with ``--settle-rounds`` posted rounds
   (default 1,000 = ``MAX_ROUNDS``, the bound of the settlement loop).

The target is ours/reference ≤ 1.10 per depth for each claim case.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/gas.py` from anywhere
    sys.path.insert(0, str(ROOT))

from eth_utils import keccak, to_checksum_address  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from offchain.allocation import RoundAllocation  # noqa: E402
from offchain.allocation.merkle import PayoutTree  # noqa: E402
from offchain.chain import AnvilNode, compile_contracts, resolve_solc  # noqa: E402
from offchain.chain.client import ChainClient, TokenClient, address_of  # noqa: E402
from offchain.chain.pool import (  # noqa: E402
    ZERO_ADDRESS,
    CampaignParams,
    LeafClaim,
    PoolClient,
    TxResult,
)
from offchain.oracle.signing import (  # noqa: E402
    sign_recipient,
    sign_round_k_of_n,
)

SIZES = (2, 16, 1_000, 100_000, 1_000_000)
TARGET = 1.10
N_SIGNERS = 5
KS = (1, 3, 5)
ROUNDS = 12  # round 1: single claims, round 2: claimRounds×1, rounds 3..12: claimRounds×10
HOUR = 3600
DAY = 86400
WEI = 10**18
AMOUNT_BASE = 10**15  # leaf i pays AMOUNT_BASE + i token units
PROVENANCE = {
    "checkpoint_hash": "0x" + "c1" * 32,
    "dataset_root": "0x" + "d5" * 32,
    "attribution_hash": "0x" + "a7" * 32,
}

console = Console(width=None if sys.stdout.isatty() else 200)


# -- small helpers -------------------------------------------------------------------------------


def depth_of(position: int) -> int:
    """Proof length of the node at ``position`` of an OZ tree array (root at 0)."""
    return (position + 1).bit_length() - 1


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def make_entries(n: int, seed: int) -> list[tuple[int, str, int]]:
    """``n`` payout entries ``(i, random EIP-55 address, AMOUNT_BASE + i)``.

    Addresses are checksummed, as the oracle's holder registry stores them
    (:class:`offchain.data.holders.Holder`), so the timed build verifies every checksum.
    """
    hexed = random.Random(seed).randbytes(20 * n).hex()
    return [(i, to_checksum_address("0x" + hexed[40 * i:40 * i + 40]), AMOUNT_BASE + i)
            for i in range(n)]


def fmt_gas(gas: int | None) -> str:
    return "—" if gas is None else f"{gas:,}"


def fmt_n(n: int) -> str:
    return f"{n:,}"


@dataclass
class Report:
    """A table rendered with rich on the console and as Markdown for docs/gas.md."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""
    numeric: bool = True  # right-align every column but the first

    def add(self, *cells: Any) -> None:
        self.rows.append([str(c) for c in cells])

    def show(self) -> None:
        table = Table(title=self.title, title_justify="left", show_lines=False)
        for i, h in enumerate(self.headers):
            table.add_column(h, justify="right" if i and self.numeric else "left")
        for row in self.rows:
            table.add_row(*[_rich_cell(c) for c in row])
        console.print(table)
        if self.note:
            console.print(f"[dim]{self.note}[/dim]")
        console.print()

    def markdown(self) -> str:
        lines = [f"#### {self.title}", "", "| " + " | ".join(self.headers) + " |",
                 "|" + "|".join(["---"] + [("---:" if self.numeric else "---")]
                                * (len(self.headers) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"


def _rich_cell(text: str) -> str:
    if text.startswith("PASS"):
        return f"[green]{text}[/green]"
    if text.startswith("FAIL"):
        return f"[red]{text}[/red]"
    return text


# -- gas accounting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gas:
    """Gas of one mined transaction: total (receipt) and the intrinsic part."""

    used: int
    calldata: int  # 4 gas per zero byte, 16 per non-zero byte (EIP-2028)
    tx_hash: str

    @property
    def execution(self) -> int:
        """What the EVM spent: gas used − 21,000 − calldata (no access lists are sent)."""
        return self.used - 21_000 - self.calldata


class Meter:
    """Reads gas used and calldata cost of mined transactions; traces them on request."""

    def __init__(self, chain: ChainClient) -> None:
        self.chain = chain
        self.floor_hits = 0

    def of_hash(self, tx_hash: str, gas_used: int) -> Gas:
        data = bytes(self.chain.w3.eth.get_transaction(tx_hash)["input"])
        zeros = data.count(0)
        calldata = 4 * zeros + 16 * (len(data) - zeros)
        tokens = zeros + 4 * (len(data) - zeros)
        if gas_used == 21_000 + 10 * tokens:  # EIP-7623 floor binding: execution unknown
            self.floor_hits += 1
        return Gas(gas_used, calldata, tx_hash)

    def of(self, result: TxResult) -> Gas:
        return self.of_hash(result.tx_hash, result.gas_used)

    def of_receipt(self, receipt: Any) -> Gas:
        return self.of_hash("0x" + bytes(receipt["transactionHash"]).hex(), int(receipt["gasUsed"]))

    def breakdown(self, gas: Gas) -> dict[str, int]:
        """Split a transaction's gas by what the top-level frame spent it on (struct-log trace).

        Each top-level step is charged the gas drop to the next top-level step, so a CALL
        carries the whole callee (the token transfer) and memory expansion lands on the opcode
        that caused it. SSTORE refunds are subtracted at the end (none occur in claims).
        """
        trace = self.chain._rpc("debug_traceTransaction", [gas.tx_hash, {
            "disableStack": True, "disableMemory": True, "disableStorage": True,
            "enableReturnData": False}])
        steps = [s for s in trace["structLogs"] if s["depth"] == 1]
        if not steps:
            raise SystemExit(f"no struct logs for {gas.tx_hash}: anvil needs --steps-tracing")
        out = {"intrinsic 21,000": 21_000, "calldata": gas.calldata}
        for i, step in enumerate(steps):
            cost = step["gas"] - steps[i + 1]["gas"] if i + 1 < len(steps) else step["gasCost"]
            out[_category(step["op"])] = out.get(_category(step["op"]), 0) + cost
        total = sum(out.values())
        refund = total - gas.used
        if refund:
            out["refund"] = -refund
        return out


_CATEGORIES = {
    "SLOAD": "SLOAD", "SSTORE": "SSTORE", "KECCAK256": "KECCAK256", "SHA3": "KECCAK256",
    "TLOAD": "TLOAD/TSTORE (reentrancy guard)", "TSTORE": "TLOAD/TSTORE (reentrancy guard)",
    "CALL": "token contract (CALL + callee)", "STATICCALL": "token contract (CALL + callee)",
    "LOG0": "LOG (event)", "LOG1": "LOG (event)", "LOG2": "LOG (event)", "LOG3": "LOG (event)",
    "LOG4": "LOG (event)",
}
BREAKDOWN_ORDER = [
    "intrinsic 21,000", "calldata", "SLOAD", "SSTORE", "KECCAK256", "LOG (event)",
    "TLOAD/TSTORE (reentrancy guard)", "token contract (CALL + callee)",
    "other opcodes (stack, memory, calldata copy, jumps)", "refund",
]


def _category(op: str) -> str:
    return _CATEGORIES.get(op, "other opcodes (stack, memory, calldata copy, jumps)")


# -- Merkle trees --------------------------------------------------------------------------------


@dataclass
class TreeStats:
    n: int
    proof_min: int
    proof_max: int
    build_s: float
    proofs_s: float
    proofs_count: int
    verify_us: float
    rss_before_mib: float
    rss_peak_mib: float


def build_tree(n: int, seed: int, *, measure: bool) -> tuple[PayoutTree, TreeStats | None]:
    rss_before = peak_rss_mib()
    entries = make_entries(n, seed)
    t0 = time.perf_counter()
    tree = PayoutTree.build(entries)
    build_s = time.perf_counter() - t0
    del entries
    if not measure:
        return tree, None
    t0 = time.perf_counter()
    for index in range(n):  # every proof; each is dropped at once (1M proofs would be ~2 GB)
        tree.proof(index)
    proofs_s = time.perf_counter() - t0
    sample = random.Random(seed + 1).sample(range(n), min(n, 1000))
    proofs = [(tree.entry(i), tree.proof(i)) for i in sample]
    t0 = time.perf_counter()
    if not all(tree.verify(entry, proof) for entry, proof in proofs):
        raise SystemExit(f"a proof of the {n}-leaf tree does not verify")
    verify_us = (time.perf_counter() - t0) / len(proofs) * 1e6
    depths = [depth_of(p) for p in tree.tree_index]
    return tree, TreeStats(n, min(depths), max(depths), build_s, proofs_s, n, verify_us,
                           rss_before, peak_rss_mib())


def reference_path(length: int, leaves: tuple[bytes, bytes], seed: int
                   ) -> tuple[bytes, list[bytes], list[bytes]]:
    """Root and proofs of two sibling leaves at depth ``length`` over random other siblings.

    Returns ``(root, proof of leaves[0], proof of leaves[1])``; both proofs are ``length`` long.
    """
    rng = random.Random(seed)
    a, b = leaves
    uppers = [rng.randbytes(32) for _ in range(length - 1)]
    node = _pair(a, b)
    for sibling in uppers:
        node = _pair(node, sibling)
    return node, [b, *uppers], [a, *uppers]


def _pair(x: bytes, y: bytes) -> bytes:
    return keccak(x + y) if x <= y else keccak(y + x)


def reference_leaf(index: int, account: str, amount: int) -> bytes:
    """``keccak256(abi.encodePacked(uint256 index, address account, uint256 amount))``."""
    return keccak(index.to_bytes(32, "big") + bytes.fromhex(account[2:]) + amount.to_bytes(32, "big"))


# -- the benchmark -------------------------------------------------------------------------------


@dataclass
class Keys:
    deployer: str
    guardian: str
    sponsor_a: str
    sponsor_b: str
    relayer: str
    signers: tuple[str, ...]


@dataclass
class SizeResult:
    n: int
    proof_len: int
    ops: dict[str, Gas] = field(default_factory=dict)
    claims: dict[str, Gas] = field(default_factory=dict)  # ours: single/b1/b10 × A/B, implicit
    ref: dict[str, Gas] = field(default_factory=dict)  # reference: A/B
    breakdown: dict[str, dict[str, int]] = field(default_factory=dict)


class Bench:
    def __init__(self, chain: ChainClient, compiled: dict[str, Any], keys: Keys) -> None:
        self.chain = chain
        self.compiled = compiled
        self.keys = keys
        self.meter = Meter(chain)
        self.pool = PoolClient.deploy(chain, compiled["CompensationPool"], keys.deployer,
                                      token_abi=compiled["TestToken"].abi)
        self.campaigns_to_reclaim: list[tuple[SizeResult, int]] = []
        # The pool's very first campaign also moves the campaign counter 0 → 1 (+17,100 gas);
        # create it here so that every measured createCampaign is the steady-state one.
        self.first_campaign = self.meter.of(self.create(ZERO_ADDRESS, 1, 1, WEI)[1])

    # -- plumbing ----------------------------------------------------------------------------

    def token(self) -> TokenClient:
        return TokenClient.deploy(self.chain, self.compiled["TestToken"], self.keys.deployer)

    def create(self, token: str, threshold: int, num_rounds: int, round_cap: int
               ) -> tuple[int, TxResult]:
        params = CampaignParams(
            token=token,
            guardian=address_of(self.keys.guardian),
            signers=tuple(address_of(k) for k in self.keys.signers),
            threshold=threshold,
            num_rounds=num_rounds,
            round_cap_wei=round_cap,
            holder_cap_wei=WEI,
            challenge_window_s=HOUR,
            claim_window_s=30 * DAY,
            posting_deadline=self.chain.block_timestamp() + 7 * DAY,
        )
        return self.pool.create_campaign(self.keys.deployer, params)

    def fund(self, token: TokenClient | None, sponsor: str, campaign_id: int, amount: int
             ) -> TxResult:
        if token is not None:
            token.mint(self.keys.deployer, address_of(sponsor), amount)
        return self.pool.fund(sponsor, campaign_id, amount)  # approve (ERC-20) is not counted

    def post(self, campaign_id: int, round_id: int, tree: PayoutTree, k: int, *,
             version: int = 1) -> TxResult:
        allocation = RoundAllocation(
            campaign_id=campaign_id, round_id=round_id, merkle_root=tree.root,
            total_wei=tree.total_wei, signer_set_version=version,
            deadline=self.chain.block_timestamp() + HOUR, **PROVENANCE)
        signatures = sign_round_k_of_n(self.keys.signers[:k], self.chain.chain_id,
                                       self.pool.address, allocation)
        return self.pool.post_round(self.keys.relayer, allocation, signatures)

    def leaf(self, tree: PayoutTree, round_id: int, index: int) -> LeafClaim:
        _, _, amount = tree.entry(index)
        return LeafClaim(round_id, index, amount, tuple(tree.proof(index)))

    # -- one tree size -----------------------------------------------------------------------

    def run_size(self, n: int, trees: Sequence[PayoutTree]) -> SizeResult:
        """``trees[kind]`` serves claim kind 0 (single, round 1), 1 (claimRounds×1, round 2) and
        2 (claimRounds×10, rounds 3..12); they are one shared tree unless n is tiny."""
        picks = pick_leaves(trees)
        proof_len = len(trees[0].proof(picks[0][0]))
        res = SizeResult(n, proof_len)
        m = self.meter
        round_total = max(t.total_wei for t in trees)
        round_cap = max(round_total, WEI)

        # ERC-20 campaign, threshold 1 of 5: funding, 12 rounds, finality, claims.
        token = self.token()
        cid, tx = self.create(token.address, 1, ROUNDS, round_cap)
        res.ops["createCampaign"] = m.of(tx)
        half = ROUNDS * round_total // 2 + 1
        res.ops["fund ERC-20: first"] = m.of(self.fund(token, self.keys.sponsor_a, cid, half))
        res.ops["fund ERC-20: top-up"] = m.of(self.fund(token, self.keys.sponsor_a, cid, half))
        res.ops["fund ERC-20: 2nd sponsor"] = m.of(self.fund(token, self.keys.sponsor_b, cid, WEI))
        round_tree = [trees[0], trees[1]] + [trees[2]] * (ROUNDS - 2)
        for r, tree in enumerate(round_tree, start=1):
            gas = m.of(self.post(cid, r, tree, 1))
            if r == 1:
                res.ops["postRound k=1 (round 1)"] = gas
            elif r == 2:
                res.ops["postRound k=1 (later round)"] = gas

        # postRound with k = 3 and 5 (first round of their own campaigns).
        implicit_campaign = None
        for k in KS[1:]:
            tok = self.token()
            cid_k, _ = self.create(tok.address, k, 1, round_cap)
            self.fund(tok, self.keys.sponsor_a, cid_k, round_total)
            res.ops[f"postRound k={k} (round 1)"] = m.of(self.post(cid_k, 1, trees[0], k))
            implicit_campaign = (cid_k, tok)

        # Native-ETH campaign: funding only.
        cid_eth, tx = self.create(ZERO_ADDRESS, 1, 1, round_cap)
        res.ops["createCampaign (native ETH)"] = m.of(tx)
        res.ops["fund ETH: first"] = m.of(self.fund(None, self.keys.sponsor_a, cid_eth, WEI))
        res.ops["fund ETH: top-up"] = m.of(self.fund(None, self.keys.sponsor_a, cid_eth, WEI))

        self.chain.increase_time(HOUR + 1)
        for r in range(1, ROUNDS + 1):
            gas = m.of(self.pool.finalize_round(self.keys.relayer, cid, r))
            if r == 1:
                res.ops["finalizeRound"] = gas

        # Case B recipients already hold the token (1 unit minted beforehand).
        for kind in range(3):
            _, account, _ = trees[kind].entry(picks[kind][1])
            token.mint(self.keys.deployer, account, 1)

        relayer = self.keys.relayer
        for case, pos in (("A", 0), ("B", 1)):
            # single claim, round 1
            index = picks[0][pos]
            _, account, amount = trees[0].entry(index)
            tx = self.pool.claim(relayer, cid, 1, index, account, amount, trees[0].proof(index))
            res.claims[f"single {case}"] = m.of(tx)
        for case, pos in (("A", 0), ("B", 1)):
            index = picks[1][pos]
            _, account, _ = trees[1].entry(index)
            tx = self.pool.claim_rounds(relayer, cid, account, [self.leaf(trees[1], 2, index)])
            res.claims[f"batch1 {case}"] = m.of(tx)
        for case, pos in (("A", 0), ("B", 1)):
            index = picks[2][pos]
            _, account, _ = trees[2].entry(index)
            leaves = [self.leaf(trees[2], r, index) for r in range(3, ROUNDS + 1)]
            res.claims[f"batch10 {case}"] = m.of(self.pool.claim_rounds(relayer, cid, account,
                                                                        leaves))
        # First claim of a round nobody finalised (k=5 campaign, own fresh token): case A
        # conditions plus the implicit Pending → Finalized write and RoundFinalized event.
        cid_k, _ = implicit_campaign
        index = picks[0][0]
        _, account, amount = trees[0].entry(index)
        tx = self.pool.claim(relayer, cid_k, 1, index, account, amount, trees[0].proof(index))
        res.claims["single A, implicit finalize"] = m.of(tx)

        self.reference(res, trees[0], picks[0])
        for key in ("single A", "single B"):
            res.breakdown[f"ours {key[-1]}"] = m.breakdown(res.claims[key])
        for case in ("A", "B"):
            res.breakdown[f"ref {case}"] = m.breakdown(res.ref[case])
        self.campaigns_to_reclaim.append((res, cid))
        return res

    def reference(self, res: SizeResult, tree: PayoutTree, pick: tuple[int, int]) -> None:
        """Uniswap-style claims at the same proof length, same indices and amounts."""
        token = self.token()
        rng = random.Random(res.n)
        accounts = [to_checksum_address(rng.randbytes(20)) for _ in range(2)]
        amounts = [tree.entry(i)[2] for i in pick]
        leaves = tuple(reference_leaf(i, a, w) for i, a, w in zip(pick, accounts, amounts,
                                                                   strict=True))
        root, proof_a, proof_b = reference_path(res.proof_len, leaves, seed=res.n)
        compiled = self.compiled["MerkleDistributorReference"]
        address = self.chain.deploy(compiled, token.address, root, sender_key=self.keys.deployer)
        distributor = self.chain.contract(address, compiled.abi, compiled.name)
        token.mint(self.keys.deployer, address, sum(amounts) + 10**18)
        token.mint(self.keys.deployer, accounts[1], 1)  # case B recipient holds the token
        for case, i, proof in (("A", 0, proof_a), ("B", 1, proof_b)):
            fn = distributor.functions.claim(pick[i], accounts[i], amounts[i], proof)
            res.ref[case] = self.meter.of_receipt(self.chain.send(fn, self.keys.relayer))

    def review_ops(self, settle_rounds: int) -> dict[str, Gas]:
        """The functions added or changed by the review (issue 13, items 17–23), each once on a
        campaign of its own (ERC-20, 1 of 5 signers); reclaims are measured by
        :meth:`reclaim_all`."""
        m, k, pool = self.meter, self.keys, self.pool
        ops: dict[str, Gas] = {}
        token = self.token()
        cid, _ = self.create(token.address, 1, 5, WEI)
        self.fund(token, k.sponsor_a, cid, 10 * WEI)
        self.fund(token, k.sponsor_b, cid, WEI)
        holder = address_of(k.sponsor_b)  # a holder with gas of its own
        rng = random.Random(17)
        other = to_checksum_address(rng.randbytes(20))
        tree = PayoutTree.build([(0, holder, WEI // 2), (1, other, WEI // 4)])
        refill = PayoutTree.build([(0, holder, WEI // 4), (1, other, WEI // 8)])
        for r in (1, 2, 3):
            self.post(cid, r, tree, 1)
        ops["revokeRound: below the latest (leaves a gap)"] = m.of(
            pool.revoke_round(k.guardian, cid, 1))
        ops["revokeRound: the latest"] = m.of(pool.revoke_round(k.guardian, cid, 3))
        ops["postRound k=1 into a revoked gap"] = m.of(self.post(cid, 1, refill, 1))
        self.chain.increase_time(HOUR + 1)
        deadline = self.chain.block_timestamp() + HOUR
        signature = sign_recipient(k.sponsor_b, self.chain.chain_id, pool.address, cid,
                                   address_of(k.relayer), 0, deadline)
        ops["claimRoundsTo: relayed, EOA authorisation, 1 leaf"] = m.of(pool.claim_rounds_to(
            k.relayer, cid, holder, [self.leaf(tree, 2, 0)], address_of(k.relayer), deadline,
            signature))
        ops["cancelRecipientAuthorizations"] = m.of(
            pool.cancel_recipient_authorizations(k.sponsor_b))
        signers = [address_of(s) for s in k.signers]
        ops["proposeSignerRotation (5 signers)"] = m.of(
            pool.propose_signer_rotation(k.deployer, cid, signers, 3))
        ops["cancelSignerRotation (guardian)"] = m.of(pool.cancel_signer_rotation(k.guardian, cid))
        pool.propose_signer_rotation(k.deployer, cid, signers, 3)
        self.chain.increase_time(pool.rotation_delay(cid))
        ops["executeSignerRotation (5 signers)"] = m.of(
            pool.execute_signer_rotation(k.relayer, cid))
        ops["transferCampaignAdmin"] = m.of(
            pool.transfer_campaign_admin(k.deployer, cid, address_of(k.sponsor_a)))
        ops["acceptCampaignAdmin"] = m.of(pool.accept_campaign_admin(k.sponsor_a, cid))
        ops["transferGuardian"] = m.of(
            pool.transfer_guardian(k.guardian, cid, address_of(k.relayer)))
        ops["acceptGuardian"] = m.of(pool.accept_guardian(k.relayer, cid))
        self.review_campaign = cid
        self.settle_campaign = None
        if settle_rounds:
            cid_s, _ = self.create(token.address, 1, settle_rounds, WEI)
            self.fund(token, k.sponsor_a, cid_s, WEI)
            one = PayoutTree.build([(0, holder, 1)])
            for r in range(1, settle_rounds + 1):
                self.post(cid_s, r, one, 1)
            self.settle_campaign = (cid_s, settle_rounds)
        return ops

    def reclaim_all(self, review: dict[str, Gas] | None = None) -> None:
        """After every claim deadline: the first reclaim settles, the second is sponsor B's;
        with ``review``, also ``reclaimTo`` and the settlement of the many-round campaign."""
        cids = [cid for _, cid in self.campaigns_to_reclaim]
        if review is not None:
            cids.append(self.review_campaign)
            if self.settle_campaign:
                cids.append(self.settle_campaign[0])
        deadline = max(self.pool.get_campaign(cid).claim_deadline for cid in cids)
        self.chain.increase_time(max(deadline - self.chain.block_timestamp(), 0) + 1)
        for res, cid in self.campaigns_to_reclaim:
            res.ops[f"reclaim: first (settles {ROUNDS} rounds)"] = self.meter.of(
                self.pool.reclaim(self.keys.sponsor_a, cid))
            res.ops["reclaim: 2nd sponsor"] = self.meter.of(
                self.pool.reclaim(self.keys.sponsor_b, cid))
        if review is None:
            return
        cold = address_of(self.keys.deployer)
        review["reclaim: first (settles 3 rounds, 1 revoked gap refilled)"] = self.meter.of(
            self.pool.reclaim(self.keys.sponsor_a, self.review_campaign))
        review["reclaimTo: 2nd sponsor, to another address"] = self.meter.of(
            self.pool.reclaim_to(self.keys.sponsor_b, self.review_campaign, cold))
        if self.settle_campaign:
            cid_s, n = self.settle_campaign
            review[f"reclaim: first (settles {n:,} rounds)"] = self.meter.of(
                self.pool.reclaim(self.keys.sponsor_a, cid_s))


def pick_leaves(trees: Sequence[PayoutTree]) -> list[tuple[int, int]]:
    """Two indices per claim kind, in the same bitmap word, both with the longest proof.

    A shared tree gives each kind its own pair (distinct holders); separate trees give index
    pairs of their own.
    """
    picks: list[tuple[int, int]] = []
    used: set[tuple[int, int]] = set()
    for tree in trees:
        longest = max(depth_of(p) for p in tree.tree_index)
        word = [i for i in range(min(len(tree), 256))
                if depth_of(tree.tree_index[i]) == longest and (id(tree), i) not in used]
        if len(word) < 2:
            raise SystemExit(f"no two unused longest-proof leaves in word 0 of a {len(tree)}-leaf tree")
        picks.append((word[0], word[1]))
        used.update({(id(tree), word[0]), (id(tree), word[1])})
    return picks


# -- tables --------------------------------------------------------------------------------------


OP_ORDER = [
    "createCampaign", "createCampaign (native ETH)",
    "fund ERC-20: first", "fund ERC-20: top-up", "fund ERC-20: 2nd sponsor",
    "fund ETH: first", "fund ETH: top-up",
    "postRound k=1 (round 1)", "postRound k=3 (round 1)", "postRound k=5 (round 1)",
    "postRound k=1 (later round)", "finalizeRound",
    f"reclaim: first (settles {ROUNDS} rounds)", "reclaim: 2nd sponsor",
]


def verdict(ratio: float) -> str:
    return f"PASS (≤ {TARGET:.2f})" if ratio <= TARGET else f"FAIL (+{(ratio - 1) * 100:.1f}%)"


def tables(results: list[SizeResult], stats: list[TreeStats], first_campaign: Gas,
           review: dict[str, Gas] | None = None) -> list[Report]:
    out = []
    t = Report("Python: building and proving PayoutTree (OpenZeppelin StandardMerkleTree)",
               ["leaves", "proof length", "build", "all proofs", "per proof", "verify (sample)",
                "peak RSS", "peak RSS growth"])
    for s in stats:
        t.add(fmt_n(s.n), f"{s.proof_min}–{s.proof_max}" if s.proof_min != s.proof_max
              else str(s.proof_max), f"{s.build_s:.2f} s",
              f"{s.proofs_s:.2f} s ({fmt_n(s.proofs_count)})",
              f"{s.proofs_s / s.proofs_count * 1e6:.1f} µs", f"{s.verify_us:.0f} µs",
              f"{s.rss_peak_mib:,.0f} MiB", f"+{s.rss_peak_mib - s.rss_before_mib:,.0f} MiB")
    t.note = ("build = PayoutTree.build (validation incl. EIP-55 checksum verification, leaf "
              "hashing, sort, inner nodes) from (index, checksummed address, amount) tuples; all "
              "proofs = "
              "tree.proof(i) for every leaf; verify = tree.verify on 1,000 random leaves; peak "
              "RSS = ru_maxrss of the whole process after that tree (trees are built smallest "
              "first, so the last row is the 1M tree's peak, with the interpreter and web3 loaded); "
              "growth = that peak minus the peak before the tree's input entries were made (input "
              "list + tree).")
    out.append(t)

    sizes = [fmt_n(r.n) for r in results]
    t = Report("Gas used by the pool's other functions, per tree size",
               ["operation", *sizes, "spread (gas used)", "spread (execution)"])
    for op in OP_ORDER:
        gases = [r.ops[op] for r in results]
        used = [g.used for g in gases]
        execution = [g.execution for g in gases]
        t.add(op, *[fmt_gas(u) for u in used], fmt_gas(max(used) - min(used)),
              fmt_gas(max(execution) - min(execution)))
    t.note = ("Receipts' gasUsed. Each size gets its own campaigns (5 signers; the ERC-20 is a "
              "fresh TestToken per campaign, so the pool's first fund also writes its fresh "
              "token balance; approve is a separate, uncounted transaction). spread = max − min "
              "across sizes; execution = gas used − 21,000 − calldata, which removes the few gas "
              "that differ with the zero bytes of each root and signature. postRound signatures "
              "come from the first k of the 5 signers; 'later round' is round 2 of the same "
              f"campaign. The first reclaim settles the campaign by reading its {ROUNDS} rounds. "
              f"The pool's very first campaign (native ETH, 5 signers; created before these) cost "
              f"{first_campaign.used:,}: it also moves the campaign counter from 0 to 1.")
    out.append(t)

    t = Report("Single claim: CompensationPool.claim vs the Uniswap-style reference at the same "
               "proof length",
               ["leaves", "proof length", "ours A", "ref A", "ratio A", f"target ≤ {TARGET:.2f}",
                "ours B", "ref B", "ratio B", f"target ≤ {TARGET:.2f} ", "ours − ref"])
    for r in results:
        oa, ra = r.claims["single A"].used, r.ref["A"].used
        ob, rb = r.claims["single B"].used, r.ref["B"].used
        t.add(fmt_n(r.n), r.proof_len, fmt_gas(oa), fmt_gas(ra), f"{oa / ra:.3f}",
              verdict(oa / ra), fmt_gas(ob), fmt_gas(rb), f"{ob / rb:.3f}", verdict(ob / rb),
              f"{oa - ra:,} / {ob - rb:,}")
    t.note = ("Case A: first claim in a fresh bitmap word to a recipient that never held the "
              "token. Case B: a later claim in a used word to a recipient that already holds it. "
              "The round was finalised beforehand (finalizeRound). Reference tree synthesised at "
              "the same depth (two sibling leaves + random siblings), same index and amount. "
              "ours − ref: A / B.")
    out.append(t)

    t = Report("Batch claims (claimRounds) and implicit finalisation",
               ["leaves", "proof length", "claimRounds×1 A", "claimRounds×1 B",
                "claimRounds×10 A", "claimRounds×10 B", "per leaf ×10 A / ref A",
                "per leaf ×10 B / ref B", "claim A, implicit finalize"])
    for r in results:
        b10a, b10b = r.claims["batch10 A"].used, r.claims["batch10 B"].used
        t.add(fmt_n(r.n), r.proof_len, fmt_gas(r.claims["batch1 A"].used),
              fmt_gas(r.claims["batch1 B"].used), fmt_gas(b10a), fmt_gas(b10b),
              f"{b10a / 10:,.0f} ({b10a / 10 / r.ref['A'].used:.3f})",
              f"{b10b / 10:,.0f} ({b10b / 10 / r.ref['B'].used:.3f})",
              fmt_gas(r.claims["single A, implicit finalize"].used))
    t.note = ("claimRounds×10 claims one leaf of the same holder in each of 10 final rounds (one "
              "token transfer); case A/B as above (A: every round's word fresh, recipient never "
              "held the token). 'implicit finalize': the first claim of a pending round whose "
              "challenge window passed, with nobody having called finalizeRound (case A).")
    out.append(t)

    for r in (results[0], results[-1]) if len(results) > 1 else results:
        cols = ["ours A", "ref A", "ours B", "ref B"]
        t = Report(f"Where the single-claim gas goes, {fmt_n(r.n)} leaves (proof length "
                   f"{r.proof_len})", ["category", *cols, "ours − ref (A)", "ours − ref (B)"])
        for cat in BREAKDOWN_ORDER:
            vals = [r.breakdown[c].get(cat, 0) for c in cols]
            if not any(vals):
                continue
            t.add(cat, *[fmt_gas(v) for v in vals], f"{vals[0] - vals[1]:+,}",
                  f"{vals[2] - vals[3]:+,}")
        totals = [sum(r.breakdown[c].values()) for c in cols]
        t.add("total (= gas used)", *[fmt_gas(v) for v in totals], f"{totals[0] - totals[1]:+,}",
              f"{totals[2] - totals[3]:+,}")
        t.note = ("debug_traceTransaction of the top-level frame: each opcode is charged the "
                  "gas drop to the next top-level step (CALL includes the whole ERC-20 transfer "
                  "in the token contract; KECCAK256 covers leaf, proof and mapping-slot hashing).")
        out.append(t)
    if review:
        t = Report("Functions of the independent review (issue 13, items 17–23)",
                   ["operation", "gas used", "execution"])
        for op, gas in review.items():
            t.add(op, fmt_gas(gas.used), fmt_gas(gas.execution))
        t.note = ("One ERC-20 campaign (1 of 5 signers, 5 rounds, challenge window 1 h): rounds "
                  "1–3 posted, 1 revoked (a gap below round 2), 3 revoked (the latest), 1 posted "
                  "again with another root; a relayed claimRoundsTo of one leaf with the holder's "
                  "nonce-0 authorisation; a rotation to all 5 signers (k = 3) proposed, cancelled "
                  "by the guardian, proposed again and executed after the delay; admin and "
                  "guardian handed over. After the claim deadline: the first reclaim (settles its "
                  "3 rounds), reclaimTo by the second sponsor, and the first reclaim of a campaign "
                  "whose every round (1 wei each) was posted: the settlement loop's bound.")
        out.append(t)
    return out


def source_state() -> str:
    """Git commit of the checkout and whether the two measured contracts differ from it."""
    contracts = ["contracts/CompensationPool.sol", "contracts/reference/MerkleDistributorReference.sol"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--", *contracts], cwd=ROOT,
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    changed = [line[3:] for line in status.splitlines()]
    return f"git {head}" + (f"; not committed: {', '.join(changed)}" if changed else "; contracts as committed")


# -- main ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-leaves", type=int, default=max(SIZES),
                        help="largest tree size to include (default: 1,000,000)")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the tables as Markdown to this file")
    parser.add_argument("--settle-rounds", type=int, default=1000,
                        help="rounds posted before the measured settlement (default 1,000 = "
                             "MAX_ROUNDS; 0 skips it)")
    args = parser.parse_args(argv)
    sizes = [n for n in SIZES if n <= args.max_leaves]
    if not sizes:
        parser.error(f"--max-leaves {args.max_leaves} excludes every size {SIZES}")

    started = dt.datetime.now(dt.UTC)
    load_at_start = os.getloadavg()[0]
    t_start = time.perf_counter()
    compiled = compile_contracts()
    _, solc_version = resolve_solc()

    stats: list[TreeStats] = []
    trees: dict[int, list[PayoutTree]] = {}
    for n in sizes:
        console.print(f"[bold]building the {n:,}-leaf PayoutTree…[/bold]")
        tree, st = build_tree(n, seed=n, measure=True)
        assert st is not None
        stats.append(st)
        # Tiny trees have too few leaves for 3 claim kinds × 2 holders: one tree per kind.
        trees[n] = [tree] * 3 if n >= 16 else [tree, *(build_tree(n, seed=n * 1000 + k,
                                                                   measure=False)[0]
                                                        for k in (1, 2))]
        console.print(f"  {st.build_s:.2f} s build, {st.proofs_s:.2f} s for all proofs, "
                      f"peak RSS {st.rss_peak_mib:,.0f} MiB")

    results: list[SizeResult] = []
    # --steps-tracing: anvil records struct logs for debug_traceTransaction (gas is unchanged).
    with AnvilNode(accounts=10, extra_args=["--steps-tracing"]) as node:
        chain = ChainClient(node.rpc_url, timeout=120)
        info = chain._rpc("anvil_nodeInfo", [])
        anvil_version = chain._rpc("web3_clientVersion", [])
        k = node.private_keys
        keys = Keys(deployer=k[0], guardian=k[1], sponsor_a=k[2], sponsor_b=k[3], relayer=k[4],
                    signers=tuple(k[5:5 + N_SIGNERS]))
        bench = Bench(chain, compiled, keys)
        for n in sizes:
            console.print(f"[bold]measuring gas with the {n:,}-leaf tree…[/bold]")
            results.append(bench.run_size(n, trees[n]))
        console.print(f"[bold]measuring the review's functions ({args.settle_rounds:,} rounds "
                      "for the settlement)…[/bold]")
        review = bench.review_ops(args.settle_rounds)
        bench.reclaim_all(review)
        first_campaign = bench.first_campaign
        floor_hits = bench.meter.floor_hits
    elapsed = time.perf_counter() - t_start

    python = Path(sys.executable)
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    command = shlex.join([str(python), *sys.argv])
    env = Report("Environment", ["item", "value"], numeric=False)
    env.add("command", f"`{command}`")
    env.add("date (UTC)", started.strftime("%Y-%m-%d %H:%M"))
    env.add("source", source_state())
    env.add("compiler", f"solc {solc_version}, evmVersion cancun, optimizer 200 runs "
                        "(both contracts, one compile_contracts call)")
    env.add("chain", f"{anvil_version}, hardfork {info.get('hardFork', '?')}, fresh node")
    env.add("machine", f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                       f"{platform.python_version()}; load average at start "
                       f"{load_at_start:.1f} (Python timings are wall-clock)")
    env.add("EIP-7623 calldata floor binding", f"{floor_hits} transactions")
    env.add("wall time", f"{elapsed:.0f} s")

    reports = [env, *tables(results, stats, first_campaign, review)]
    for report in reports:
        report.show()
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(r.markdown() for r in reports))
        console.print(f"Markdown tables written to {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
