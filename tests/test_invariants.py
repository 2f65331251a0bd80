"""Property-based invariants of ``CompensationPool`` on a real anvil node (hypothesis stateful).

A :class:`PoolMachine` (hypothesis ``RuleBasedStateMachine``) runs random sequences of fund /
post (including into revoked gaps) / revoke (any pending round) / finalize / claim (single, batch,
batch-to-recipient with single-use nonced authorisations) / cancel authorisations / reclaim and
reclaimTo / propose, execute and cancel signer rotations / pause / unpause / time jumps, sent by
random actors (sponsors, relayer, guardians, admins, a stranger, holders), on one pool holding
three campaigns: two share one ERC-20 (``TestToken``), the third
pays native ETH. A Python model mirrors the contract: for every action it predicts the exact
outcome (success, or the name of the custom error the contract must revert with, in the order the
contract checks), and the machine fails on any disagreement in either direction. One hypothesis
rule draws a weighted action (:data:`ACTION_WEIGHTS`) and then its arguments; rounds, holders,
leaves and campaigns are mostly picked where something can happen (a final round, its tree's
leaves), sometimes anywhere (tampered leaves, strangers, the unknown campaign, stale signer sets,
replays of revoked allocations). At the snapshot C1 has a final round (signed total below its
leaf sum) and C3 a pending one (a leaf above the holder cap).

After every step one batched JSON-RPC request reads the chain and checks:

- per token: Σ funded == contract balance + Σ paid out (claims + reclaims), exactly; the same
  identity is checked twice, from the model's ledger and from the ``Funded`` / ``Claimed`` /
  ``Reclaimed`` events of the mined receipts (ETH through ``eth_getBalance``);
- per campaign: model balance (funded − claimed − reclaimed) ≥ 0, and the sum over the
  campaigns of one token equals the contract's balance of that token (no campaign touches
  another's funds);
- every actor's balance of both assets equals the model's (gas price is 0 on this node);
- ``getCampaign`` (totals, allocation, next round id, signer-set version, threshold, settlement)
  and ``getRound`` (root, total, remaining, caps, times, status) equal the model; a campaign's
  allocation equals the totals of its live rounds and never exceeds its funding, and what its
  rounds report paid (Σ total − remaining) equals what the model paid from them; no round at or
  above the next round id is live; every holder's recipient nonce equals the model's;
- per account and round: what the model paid (``paidInRound``) never exceeds the holder cap;
- from the events of every mined receipt, independently of the model: a leaf
  ``(campaign, round, index)`` is paid at most once, never before the round's ``finalizesAt`` nor
  at/after the campaign's ``claimDeadline``; no reclaim before ``claimDeadline``; a revoked
  allocation (campaign, round, root) is never posted again.

Speed: the pool, the token and the campaigns are deployed and pre-funded once, then every
example starts with ``evm_revert`` to an ``evm_snapshot`` (re-taken at once: anvil snapshots are
single-use). Transactions go through ``eth_sendTransactionSync`` from anvil's unlocked dev
accounts with gas price 0 and an explicit gas limit (one request, receipt included); a reverted
transaction is mined too, and its error data comes from ``ots_getTransactionError``. The node
runs with a block timestamp interval of 1 s, so each transaction is mined exactly one second
after the previous block and the model knows the timestamp every call executes at (time jumps
mine one block at a chosen timestamp, hitting the window boundaries exactly). EIP-712 digests
are computed here (checked once against ``offchain.oracle.signing`` and the contract) and
signatures are cached across examples.

Run: ``.venv/bin/python -m pytest -q tests/test_invariants.py`` (``INVARIANT_SEQUENCES``,
default 25; ``INVARIANT_STEPS``, default 12; ``INVARIANT_RANDOM=1`` for a random
instead of the fixed, derandomised search; ``INVARIANT_CONTRACTS=<dir>`` to run against
another copy of the contracts, e.g. a mutant). ``bench/invariants.py`` runs the same machine for
many sequences and prints a table.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from eth_abi import encode as abi_encode
from eth_keys import keys as eth_keys
from eth_utils import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from offchain.allocation import RoundAllocation
from offchain.allocation.merkle import PayoutTree
from offchain.chain import AnvilNode, ChainClient, ContractRevert, address_of, compile_contracts
from offchain.chain.client import TokenClient
from offchain.chain.pool import ZERO_ADDRESS, CampaignParams, PoolClient
from offchain.oracle.signing import recipient_digest, round_digest

# -- fixed world -----------------------------------------------------------------------------------

ACTORS = ("deployer", "guardian1", "sponsorA", "sponsorB", "relayer", "stranger", "admin2",
          "guardian2", "H0", "H1", "H2", "H3")
"""Anvil dev accounts 0..11 by role. ``deployer`` holds PAUSER_ROLE and administers C1 and C3."""
HOLDERS = ("H0", "H1", "H2", "H3")
SIGNER_KEYS = tuple(keccak(f"ccomp-invariant-signer-{i}".encode()) for i in range(5))
"""Oracle signer keys S0..S4 (S4 is never in any signer set: the outsider)."""
SIGNER_ADDRS = tuple(address_of(k) for k in SIGNER_KEYS)
ZERO_SIGNER = -1  # stands for address(0) in a signer set
ZERO_SIG = b"\x00" * 65

TOKEN, ETH = "T", "ETH"
FAR = 2**40
"""Signature deadline that never expires here."""
EXPIRED = 1_000_000_000
"""Signature deadline long past (year 2001)."""
PROVENANCE = (b"\xc1" * 32, b"\xd5" * 32, b"\xa7" * 32)
GAS = hex(3_000_000)

# Campaign configs: (token, creator, guardian, signer indices, threshold, rounds, round cap,
# holder cap, challenge window, claim window, posting window from the setup block).
# Posting windows exceed the contract's MIN_ROTATION_DELAY (3,600 s), so a rotation proposed
# early can be executed while rounds are still posted.
CAMPAIGNS = {
    1: (TOKEN, "deployer", "guardian1", (0, 1, 2), 2, 3, 120, 50, 60, 120, 4020),
    2: (TOKEN, "admin2", "guardian2", (0,), 1, 1, 100, 40, 30, 90, 3900),
    3: (ETH, "deployer", "guardian1", (1, 2, 3), 2, 3, 120, 50, 45, 100, 3960),
}
MIN_ROTATION_DELAY = 3600
UNKNOWN_CAMPAIGN = 4
PREFUND = {1: {"sponsorA": 150, "sponsorB": 90}, 2: {"sponsorA": 100, "sponsorB": 20},
           3: {"sponsorA": 120, "sponsorB": 60}}
"""Funding made at set-up (token units / wei), before the snapshot."""
PREPOST = {1: 4, 3: 3}
"""Rounds posted at set-up (campaign → allocation index): C1's (four leaves of 25 under a signed
total of 70: the third claim overdraws) is final when the examples start, C3's (a leaf above the
holder cap) still pending (revocable, finalizable)."""
APPROVED = ("sponsorA", "sponsorB")
"""Accounts that hold TestToken and approved the pool for the maximum."""


# Payout trees over the holders (holder names become the dev accounts' addresses in Env).
TREE_SPECS: tuple[tuple[tuple[int, str, int], ...], ...] = (
    ((0, "H0", 30), (1, "H1", 20)),                                             # T0: 50
    ((0, "H1", 10), (1, "H2", 25), (2, "H3", 15)),                              # T1: 50
    ((0, "H0", 40), (1, "H1", 5), (2, "H2", 5), (3, "H3", 20), (4, "H0", 10)),  # T2: 80
    ((0, "H2", 45), (1, "H3", 60)),                                             # T3: 105, 60 > caps
    ((0, "H0", 25), (1, "H1", 25), (2, "H2", 25), (3, "H3", 25)),               # T4: 100
)
ALLOCS: tuple[tuple[int | None, int], ...] = (
    (0, 50), (1, 50), (2, 80), (3, 105),
    (4, 70),    # signed total below the leaf sum: the last claims hit RoundOverClaimed
    (1, 130),   # over every round cap
    (0, 0),     # zero total
    (None, 50),  # zero Merkle root
)
"""Round allocations the oracle may sign: (tree index or None for a zero root, signed total)."""
SIGNER_SETS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (), (0, 3), (1, 1), (2,), (0, ZERO_SIGNER), (3, 1, 0, 2),
)
"""Signer sets a rotation may propose (``()``, ``(1, 1)`` and one with address zero are
invalid)."""
POST_MODES = ("ok", "ok", "few", "all", "outsider", "ok", "stale", "replay", "expired", "ok",
              "desc", "dup", "garbage", "replay", "ok", "gap")
"""``replay`` re-relays a revoked allocation with its original signatures (``ok`` when the
targeted round id was not revoked); ``gap`` targets a revoked round id below the next one (the
next id when there is none)."""
CLAIM_MODES = ("single", "rounds", "to_sig", "to_badsig", "single", "to_expired", "to_zero",
               "to_self", "rounds", "single", "to_stale", "to_sig")
FUND_AMOUNTS = (60, 25, 1, 0, 7, 100)
# Strategies draw the productive choice first (hypothesis favours and shrinks towards it).

# status codes of RoundStatus
NONE, PENDING, FINALIZED, REVOKED = 0, 1, 2, 3


def _sel(signature: str) -> bytes:
    return keccak(text=signature)[:4]


SEL = {name: _sel(sig) for name, sig in {
    "fund": "fund(uint256,uint256)",
    "postRound": "postRound((uint256,uint256,bytes32,uint256,bytes32,bytes32,bytes32,uint256,"
                 "uint256),bytes[])",
    "revokeRound": "revokeRound(uint256,uint256)",
    "finalizeRound": "finalizeRound(uint256,uint256)",
    "claim": "claim(uint256,uint256,uint256,address,uint256,bytes32[])",
    "claimRounds": "claimRounds(uint256,address,(uint256,uint256,uint256,bytes32[])[])",
    "claimRoundsTo": "claimRoundsTo(uint256,address,(uint256,uint256,uint256,bytes32[])[],"
                     "address,uint256,bytes)",
    "reclaim": "reclaim(uint256)",
    "reclaimTo": "reclaimTo(uint256,address)",
    "proposeSignerRotation": "proposeSignerRotation(uint256,address[],uint256)",
    "executeSignerRotation": "executeSignerRotation(uint256)",
    "cancelSignerRotation": "cancelSignerRotation(uint256)",
    "cancelRecipientAuthorizations": "cancelRecipientAuthorizations()",
    "nonces": "nonces(address)",
    "pause": "pause()",
    "unpause": "unpause()",
    "getCampaign": "getCampaign(uint256)",
    "getRound": "getRound(uint256,uint256)",
    "paused": "paused()",
    "balanceOf": "balanceOf(address)",
}.items()}
TOPIC = {name: "0x" + keccak(text=sig).hex() for name, sig in {
    "Funded": "Funded(uint256,address,uint256)",
    "RoundPosted": "RoundPosted(uint256,uint256,bytes32,uint256,bytes32,bytes32,bytes32,uint256,"
                   "uint256)",
    "RoundRevoked": "RoundRevoked(uint256,uint256,address)",
    "Claimed": "Claimed(uint256,uint256,address,uint256,address,uint256)",
    "Reclaimed": "Reclaimed(uint256,address,address,uint256)",
}.items()}
TOPIC_NAME = {v: k for k, v in TOPIC.items()}

_DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
_ROUND_TYPEHASH = keccak(
    text="RoundAllocation(uint256 campaignId,uint256 roundId,bytes32 merkleRoot,uint256 total,"
         "bytes32 checkpointHash,bytes32 datasetRoot,bytes32 attributionHash,"
         "uint256 signerSetVersion,uint256 deadline)")
_RECIPIENT_TYPEHASH = keccak(
    text="ClaimRecipient(uint256 campaignId,address account,address recipient,uint256 nonce,"
         "uint256 deadline)")


def _u(x: int) -> bytes:
    return x.to_bytes(32, "big")


def _a(addr: str) -> bytes:
    return bytes(12) + bytes.fromhex(addr[2:])


def _words(hex_data: str, n: int) -> list[int]:
    raw = hex_data[2:]
    return [int(raw[64 * i: 64 * (i + 1)], 16) for i in range(n)]


# -- statistics ------------------------------------------------------------------------------------


@dataclass
class Stats:
    """What the machine ran (module-level, accumulated over runs until :meth:`reset`)."""

    sequences: int = 0
    steps: int = 0
    ok: Counter = field(default_factory=Counter)
    reverted: Counter = field(default_factory=Counter)
    reverted_by_kind: Counter = field(default_factory=Counter)
    cases: Counter = field(default_factory=Counter)  # accepted actions of note, by case

    def reset(self) -> None:
        self.sequences = self.steps = 0
        self.ok.clear()
        self.cases.clear()
        self.reverted.clear()
        self.reverted_by_kind.clear()

    @property
    def payouts(self) -> int:
        """Successful claims and reclaims (single and batch)."""
        return sum(self.ok[k] for k in ("claim", "claim_batch", "reclaim", "reclaim_to"))


STATS = Stats()


# -- the model -------------------------------------------------------------------------------------


@dataclass
class RoundM:
    alloc: int
    tree: int | None
    root: bytes
    total: int
    remaining: int
    holder_cap: int
    posted_at: int
    finalizes_at: int
    status: int
    version: int = 1  # signer-set version it was posted under
    signed_by: tuple[int, ...] = ()  # signer indices of the posted signatures


@dataclass
class CampaignM:
    cid: int
    token: str
    admin: str
    guardian: str
    num_rounds: int
    round_cap: int
    holder_cap: int
    challenge: int
    posting_deadline: int
    claim_deadline: int
    signers: tuple[int, ...]
    threshold: int
    version: int = 1
    next_round: int = 1
    total_funded: int = 0
    total_allocated: int = 0
    funded_by: dict[str, int] = field(default_factory=dict)
    reclaimed: set[str] = field(default_factory=set)
    settled: bool = False
    unclaimed_at_expiry: int = 0
    claimed_total: int = 0
    reclaimed_total: int = 0
    rounds: dict[int, RoundM] = field(default_factory=dict)
    bits: dict[int, set[int]] = field(default_factory=dict)  # claimed leaf indices per round id
    revoked_roots: set[tuple[int, bytes]] = field(default_factory=set)  # (round id, root)
    paid_to: dict[tuple[int, str], int] = field(default_factory=dict)  # (round, holder) -> paid
    pending_rotation: tuple[tuple[int, ...], int, int] | None = None  # signers, k, executableAt

    @property
    def rotation_delay(self) -> int:
        return max(self.challenge, MIN_ROTATION_DELAY)

    @property
    def balance(self) -> int:
        """What the campaign still holds (model)."""
        return self.total_funded - self.claimed_total - self.reclaimed_total

    def live_rounds(self) -> list[int]:
        return [r for r in range(1, self.next_round) if self.rounds[r].status in (PENDING,
                                                                                   FINALIZED)]

    def gaps(self) -> list[int]:
        """Revoked round ids below the next one (a later round stands above each)."""
        return [r for r in range(1, self.next_round) if self.rounds[r].status == REVOKED]


@dataclass
class Model:
    now: int
    paused: bool
    campaigns: dict[int, CampaignM]
    balances: dict[str, dict[str, int]]  # asset -> actor -> balance
    funded: dict[str, int]  # asset -> Σ funded
    paid: dict[str, int]  # asset -> Σ claims + reclaims
    # independent ledger from receipts' events
    ev_funded: dict[str, int]
    ev_paid: dict[str, int]
    ev_leaves: set[tuple[int, int, int]]
    ev_finalizes: dict[tuple[int, int], int]
    ev_roots: dict[tuple[int, int], str] = field(default_factory=dict)
    ev_revoked: set[tuple[int, int, str]] = field(default_factory=set)
    nonces: dict[str, int] = field(default_factory=lambda: dict.fromkeys(HOLDERS, 0))


class Expect(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The model's prediction that the call reverts with custom error ``name``."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass
class Outcome:
    ok: bool
    error: str | None
    receipt: dict[str, Any]


# -- the chain -------------------------------------------------------------------------------------


class Env:
    """One anvil node with the pool, token and three pre-funded campaigns, snapshotted."""

    def __init__(self) -> None:
        self.node = AnvilNode(
            accounts=len(ACTORS), balance_eth=10_000,
            extra_args=["--base-fee", "0", "--gas-price", "0", "--no-priority-fee", "--silent"],
        ).start()
        try:
            self._setup()
        except BaseException:
            self.node.stop()
            raise

    # -- set-up ------------------------------------------------------------------------------

    def _setup(self) -> None:
        self.http = requests.Session()
        self.url = self.node.rpc_url
        self.chain = ChainClient(self.url)
        self.key = dict(zip(ACTORS, self.node.private_keys, strict=True))
        self.addr = {a: address_of(k) for a, k in self.key.items()}
        self.actor_of = {v.lower(): k for k, v in self.addr.items()}
        source = os.environ.get("INVARIANT_CONTRACTS")
        compiled = (compile_contracts(Path(source), cache_dir=Path(tempfile.gettempdir())
                                      / "ccomp-invariant-build")
                    if source else compile_contracts())
        deployer = self.key["deployer"]
        self.pool = PoolClient.deploy(self.chain, compiled["CompensationPool"], deployer,
                                      token_abi=compiled["TestToken"].abi)
        self.token = TokenClient.deploy(self.chain, compiled["TestToken"], deployer)
        self.pool_addr = self.pool.address
        self.token_addr = self.token.address
        self.chain_id = self.chain.chain_id
        self.domain = keccak(_DOMAIN_TYPEHASH + keccak(b"CompensationPool") + keccak(b"2")
                             + _u(self.chain_id) + _a(self.pool_addr))

        # trees over the holders
        self.trees = [PayoutTree.build([(i, self.addr[h], w) for i, h, w in spec])
                      for spec in TREE_SPECS]
        self.proofs = [[[bytes.fromhex(p[2:]) for p in t.proof(e[0])] for e in t.entries]
                       for t in self.trees]
        self.all_leaves = [(t, pos) for t, tree in enumerate(self.trees)
                           for pos in range(len(tree.entries))]
        self.holder_leaves = {
            h: [(t, pos) for t, pos in self.all_leaves
                if self.trees[t].entries[pos][1] == self.addr[h]] for h in HOLDERS}

        now = self.chain.block_timestamp()
        campaigns: dict[int, CampaignM] = {}
        for cid, (tok, creator, guardian, signers, thr, rounds, rcap, hcap, chall, claim_w,
                  post_w) in CAMPAIGNS.items():
            params = CampaignParams(
                token=self.token_addr if tok == TOKEN else ZERO_ADDRESS,
                guardian=self.addr[guardian], signers=tuple(SIGNER_ADDRS[s] for s in signers),
                threshold=thr, num_rounds=rounds, round_cap_wei=rcap, holder_cap_wei=hcap,
                challenge_window_s=chall, claim_window_s=claim_w,
                posting_deadline=now + post_w,
            )
            got, _ = self.pool.create_campaign(self.key[creator], params)
            assert got == cid
            info = self.pool.get_campaign(cid)
            campaigns[cid] = CampaignM(
                cid=cid, token=tok, admin=creator, guardian=guardian, num_rounds=rounds,
                round_cap=rcap, holder_cap=hcap, challenge=chall,
                posting_deadline=info.posting_deadline, claim_deadline=info.claim_deadline,
                signers=signers, threshold=thr)
        for sponsor in APPROVED:
            self.token.mint(deployer, self.addr[sponsor], 10**9)
            self.token.approve(self.key[sponsor], self.pool_addr, 2**256 - 1)
        funded = {TOKEN: 0, ETH: 0}
        for cid, sponsors in PREFUND.items():
            c = campaigns[cid]
            for sponsor, amount in sponsors.items():
                self.pool.fund(self.key[sponsor], cid, amount, approve=False)
                c.funded_by[sponsor] = c.funded_by.get(sponsor, 0) + amount
                c.total_funded += amount
                funded[c.token] += amount

        self.sig_cache: dict[tuple[bytes, bytes], bytes] = {}
        ev_finalizes: dict[tuple[int, int], int] = {}
        ev_roots: dict[tuple[int, int], str] = {}
        for cid, alloc in PREPOST.items():
            c = campaigns[cid]
            tree, total = ALLOCS[alloc]
            root = self.trees[tree].root_bytes
            signers = sorted(c.signers[:c.threshold], key=lambda i: int(SIGNER_ADDRS[i], 16))
            digest = self.round_digest(cid, 1, root, total, 1, FAR)
            allocation = RoundAllocation(
                campaign_id=cid, round_id=1, merkle_root="0x" + root.hex(), total_wei=total,
                checkpoint_hash="0x" + PROVENANCE[0].hex(),
                dataset_root="0x" + PROVENANCE[1].hex(),
                attribution_hash="0x" + PROVENANCE[2].hex(), signer_set_version=1,
                deadline=FAR)
            self.pool.post_round(self.key["relayer"], allocation,
                                 [self.sign(digest, SIGNER_KEYS[i]) for i in signers])
            info = self.pool.get_round(cid, 1)
            c.rounds[1] = RoundM(alloc, tree, root, total, total, c.holder_cap, info.posted_at,
                                 info.finalizes_at, PENDING, 1, tuple(signers))
            c.total_allocated += total
            c.next_round = 2
            ev_finalizes[(cid, 1)] = info.finalizes_at
            ev_roots[(cid, 1)] = root.hex()
            if cid == 1:
                self.chain.increase_time(c.challenge)

        self._check_digests()
        self.rpc("anvil_setBlockTimestampInterval", [1])
        self.rpc("evm_mine", [])
        t0 = int(self.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)

        # baseline balances (gas price 0 from here on: every change is a payout or a funding)
        balances: dict[str, dict[str, int]] = {TOKEN: {}, ETH: {}}
        for actor, address in self.addr.items():
            balances[TOKEN][actor] = self.token.balance_of(address)
            balances[ETH][actor] = self.chain.eth_balance(address)
        self.initial = Model(
            now=t0, paused=False, campaigns=campaigns, balances=balances,
            funded=dict(funded), paid={TOKEN: 0, ETH: 0},
            ev_funded=dict(funded), ev_paid={TOKEN: 0, ETH: 0}, ev_leaves=set(),
            ev_finalizes=ev_finalizes, ev_roots=ev_roots,
        )
        self._build_view_batch()
        self.snapshot = self.rpc("evm_snapshot", [])

    def _check_digests(self) -> None:
        """The local EIP-712 digests equal the project's signing module and the contract's."""
        tree = self.trees[0]
        alloc = RoundAllocation(
            campaign_id=1, round_id=2, merkle_root=tree.root, total_wei=50,
            checkpoint_hash="0x" + PROVENANCE[0].hex(), dataset_root="0x" + PROVENANCE[1].hex(),
            attribution_hash="0x" + PROVENANCE[2].hex(), signer_set_version=3, deadline=FAR)
        mine = self.round_digest(1, 2, tree.root_bytes, 50, 3, FAR)
        assert mine == round_digest(self.chain_id, self.pool_addr, alloc)
        assert mine == self.pool.round_digest(alloc)
        h0, relayer = self.addr["H0"], self.addr["relayer"]
        mine = self.recipient_digest(2, h0, relayer, 3, FAR)
        assert mine == recipient_digest(self.chain_id, self.pool_addr, 2, h0, relayer, 3, FAR)
        assert mine == self.pool.recipient_digest(2, h0, relayer, 3, FAR)

    def _build_view_batch(self) -> None:
        calls: list[dict[str, Any]] = []
        plan: list[tuple[Any, ...]] = []

        def call(to: str, data: bytes, what: tuple[Any, ...]) -> None:
            calls.append({"to": to, "data": "0x" + data.hex()})
            plan.append(what)

        call(self.pool_addr, SEL["paused"], ("paused",))
        call(self.token_addr, SEL["balanceOf"] + _a(self.pool_addr), ("bal", TOKEN, None))
        plan.append(("bal", ETH, None))
        calls.append({"eth": self.pool_addr})
        for cid, c in self.initial.campaigns.items():
            call(self.pool_addr, SEL["getCampaign"] + _u(cid), ("campaign", cid))
            for r in range(1, c.num_rounds + 1):
                call(self.pool_addr, SEL["getRound"] + _u(cid) + _u(r), ("round", cid, r))
        for holder in HOLDERS:
            call(self.pool_addr, SEL["nonces"] + _a(self.addr[holder]), ("nonce", holder))
        for actor, address in self.addr.items():
            call(self.token_addr, SEL["balanceOf"] + _a(address), ("bal", TOKEN, actor))
            plan.append(("bal", ETH, actor))
            calls.append({"eth": address})
        self.view_plan = plan
        self.view_batch = [
            {"jsonrpc": "2.0", "id": i,
             "method": "eth_getBalance" if "eth" in c else "eth_call",
             "params": [c["eth"], "latest"] if "eth" in c else [c, "latest"]}
            for i, c in enumerate(calls)
        ]

    # -- RPC -----------------------------------------------------------------------------------

    def rpc(self, method: str, params: list[Any]) -> Any:
        reply = self.http.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                               "params": params}).json()
        if "error" in reply:
            raise RuntimeError(f"{method} failed: {reply['error']}")
        return reply["result"]

    def views(self) -> list[tuple[tuple[Any, ...], str]]:
        """Run the invariant read batch; ``(plan entry, hex result)`` pairs."""
        replies = self.http.post(self.url, json=self.view_batch).json()
        replies.sort(key=lambda r: r["id"])
        for r in replies:
            if "error" in r:
                raise RuntimeError(f"view batch failed: {r['error']}")
        return [(p, r["result"]) for p, r in zip(self.view_plan, replies, strict=True)]

    def send(self, sender: str, data: bytes, value: int = 0) -> Outcome:
        """Mine one pool transaction from ``sender`` (an actor name)."""
        tx = {"from": self.addr[sender], "to": self.pool_addr, "data": "0x" + data.hex(),
              "value": hex(value), "gas": GAS, "gasPrice": "0x0"}
        receipt = self.rpc("eth_sendTransactionSync", [tx])
        if receipt["status"] == "0x1":
            return Outcome(True, None, receipt)
        raw = self.rpc("ots_getTransactionError", [receipt["transactionHash"]])
        err = self.chain.decode_revert(raw)
        name = err.name if isinstance(err, ContractRevert) else f"<{raw}>"
        return Outcome(False, name, receipt)

    def reset(self) -> None:
        """Back to the snapshot (and take it again: anvil snapshots are single-use)."""
        assert self.rpc("evm_revert", [self.snapshot]) is True
        self.snapshot = self.rpc("evm_snapshot", [])

    def close(self) -> None:
        self.http.close()
        self.node.stop()

    # -- signatures ----------------------------------------------------------------------------

    def round_digest(self, cid: int, rid: int, root: bytes, total: int, version: int,
                     deadline: int) -> bytes:
        struct = keccak(_ROUND_TYPEHASH + _u(cid) + _u(rid) + root + _u(total) + PROVENANCE[0]
                        + PROVENANCE[1] + PROVENANCE[2] + _u(version) + _u(deadline))
        return keccak(b"\x19\x01" + self.domain + struct)

    def recipient_digest(self, cid: int, account: str, recipient: str, nonce: int,
                         deadline: int) -> bytes:
        struct = keccak(_RECIPIENT_TYPEHASH + _u(cid) + _a(account) + _a(recipient) + _u(nonce)
                        + _u(deadline))
        return keccak(b"\x19\x01" + self.domain + struct)

    def sign(self, digest: bytes, key: bytes | str) -> bytes:
        """65-byte ``r ‖ s ‖ v`` (low s, v ∈ {27, 28}); cached across examples."""
        if isinstance(key, str):
            key = bytes.fromhex(key[2:])
        cached = self.sig_cache.get((digest, key))
        if cached is None:
            sig = eth_keys.PrivateKey(key).sign_msg_hash(digest)
            cached = _u(sig.r) + _u(sig.s) + bytes([sig.v + 27])
            self.sig_cache[(digest, key)] = cached
        return cached


ENV: Env | None = None


def get_env() -> Env:
    """The module's :class:`Env`, started on first use."""
    global ENV
    if ENV is None:
        ENV = Env()
    return ENV


def close_env() -> None:
    global ENV
    if ENV is not None:
        ENV.close()
        ENV = None


# -- the state machine -----------------------------------------------------------------------------

PICK = st.integers(0, 99).map(lambda v: v * 37 % 100)
"""A percentile: small values pick the productive branch (the campaign/round where something
can happen, the valid leaf, the right actor); large values the odd ones (tampering, strangers,
the unknown campaign). Scattered (``v ↦ 37 v mod 100``) so that hypothesis's liking for the ends
of a range does not inflate the rare branches; 0 (where shrinking goes) stays productive."""


ACTION_WEIGHTS = {
    "claim": 22, "advance_time": 16, "fund": 8, "reclaim": 8, "finalize": 6, "revoke": 7,
    "rotate": 8, "pause_toggle": 4, "post": 14, "cancel_authorizations": 2, "outrun": 3,
}
"""How often each action is drawn (relative). One hypothesis rule draws the action and then its
arguments: hypothesis's own choice among many rules (sorted by arity, thinned per example by
swarm testing) starved the claims that need a post and a time jump first."""
ACTION_TABLE = tuple(name for name, w in ACTION_WEIGHTS.items() for _ in range(w))
ACTION_ARGS: dict[str, Any] = {}


def action(**strategies: Any) -> Any:
    """Register a :class:`PoolMachine` method as an action with these argument strategies."""
    def register(fn: Any) -> Any:
        ACTION_ARGS[fn.__name__] = st.fixed_dictionaries(strategies)
        return fn
    return register


def _claimable(c: CampaignM, t: int) -> bool:
    """Some live round of ``c`` is final at ``t`` and claims are open."""
    return t < c.claim_deadline and any(c.rounds[r].finalizes_at <= t for r in c.live_rounds())


class PoolMachine(RuleBasedStateMachine):
    """Random action sequences on the snapshotted pool, checked against :class:`Model`."""

    def __init__(self) -> None:
        super().__init__()
        self.env = get_env()
        self.env.reset()
        self.m: Model = copy.deepcopy(self.env.initial)
        STATS.sequences += 1

    # -- plumbing ------------------------------------------------------------------------------

    def _camp(self, cid: int) -> CampaignM:
        c = self.m.campaigns.get(cid)
        if c is None:
            raise Expect("UnknownCampaign")
        return c

    def _act(self, kind: str, sender: str, data: bytes, plan, value: int = 0) -> None:
        """Predict with ``plan(t)`` (raises :class:`Expect` or returns a commit callable), mine
        the transaction at ``t = now + 1`` and compare."""
        STATS.steps += 1
        t = self.m.now + 1
        try:
            commit = plan(t)
            expected = None
        except Expect as e:
            commit, expected = None, e.name
        out = self.env.send(sender, data, value)
        mined_at = out.receipt["blockTimestamp"]  # anvil gives an int here (hex in logs)
        mined_at = int(mined_at, 16) if isinstance(mined_at, str) else int(mined_at)
        assert mined_at == t, f"{kind}: mined at {mined_at}, model expected {t}"
        self.m.now = t
        if out.ok and expected is None:
            commit()
            self._events(out.receipt, t)
            STATS.ok[kind] += 1
        elif not out.ok and out.error == expected:
            STATS.reverted[expected] += 1
            STATS.reverted_by_kind[(kind, expected)] += 1
        else:
            got = "success" if out.ok else f"revert {out.error}"
            raise AssertionError(f"{kind} by {sender}: model expected "
                                 f"{expected or 'success'}, contract gave {got}")

    def _pay(self, asset: str, to: str, amount: int) -> None:
        self.m.balances[asset][to] += amount
        self.m.paid[asset] += amount

    def _events(self, receipt: dict[str, Any], t: int) -> None:
        """Independent checks on the mined receipt's pool events."""
        m = self.m
        for log in receipt["logs"]:
            if log["address"].lower() != self.env.pool_addr.lower():
                continue
            name = TOPIC_NAME.get(log["topics"][0])
            if name is None:
                continue
            topics = [int(x, 16) for x in log["topics"][1:]]
            cid = topics[0]
            c = m.campaigns[cid]
            if name == "Funded":
                m.ev_funded[c.token] += _words(log["data"], 1)[0]
            elif name == "RoundPosted":
                finalizes = _words(log["data"], 7)[6]
                root = log["data"][2:66]
                assert finalizes == t + c.challenge
                assert (cid, topics[1], root) not in m.ev_revoked, (
                    f"revoked allocation {root} re-posted as round {topics[1]} of {cid}")
                m.ev_finalizes[(cid, topics[1])] = finalizes
                m.ev_roots[(cid, topics[1])] = root
            elif name == "RoundRevoked":
                del m.ev_finalizes[(cid, topics[1])]
                m.ev_revoked.add((cid, topics[1], m.ev_roots[(cid, topics[1])]))
            elif name == "Claimed":
                index, _, amount = _words(log["data"], 3)
                leaf = (cid, topics[1], index)
                assert leaf not in m.ev_leaves, f"leaf {leaf} paid twice"
                m.ev_leaves.add(leaf)
                finalizes = m.ev_finalizes.get((cid, topics[1]))
                assert finalizes is not None, f"claim from round {leaf[:2]} never posted/live"
                assert t >= finalizes, f"claim at {t} before finality {finalizes}"
                assert t < c.claim_deadline, f"claim at {t} after claim deadline"
                m.ev_paid[c.token] += amount
            elif name == "Reclaimed":
                assert t >= c.claim_deadline, f"reclaim at {t} before {c.claim_deadline}"
                m.ev_paid[c.token] += _words(log["data"], 2)[1]

    def _pick_campaign(self, pick: int, prefer: Any = None, share: int = 60) -> int:
        """A campaign id: for ``pick < share`` one where ``prefer(campaign, t)`` holds (if any),
        else any of the three or, rarely, the unknown one."""
        if prefer is not None and pick < share:
            t = self.m.now + 1
            good = [c.cid for c in self.m.campaigns.values() if prefer(c, t)]
            if good:
                return good[pick % len(good)]
        return (1, 2, 3, 1, 2, 3, 1, 2, 3, UNKNOWN_CAMPAIGN)[pick % 10]

    def _pick_round(self, c: CampaignM | None, pick: int, final: bool = False) -> int:
        """A round id: for ``pick < 70`` a live one (final by the next block if ``final`` and
        there is one), else any id up to one past ``numRounds``."""
        if c is None:
            return 1 + pick % 3
        live = c.live_rounds()
        if final:
            t = self.m.now + 1
            live = [r for r in live if c.rounds[r].finalizes_at <= t] or live
        if live and pick < 70:
            return live[pick % len(live)]
        return 1 + pick % (c.num_rounds + 1)

    # -- rules ---------------------------------------------------------------------------------

    @action(cpick=PICK, who=PICK, amount=st.sampled_from(FUND_AMOUNTS), bad=PICK)
    def fund(self, cpick: int, who: int, amount: int, bad: int) -> None:
        cid = self._pick_campaign(cpick, lambda c, t: t < c.posting_deadline)
        funders = ("sponsorA", "sponsorB", "sponsorA", "sponsorB", "stranger", "H0", "relayer")
        sender = funders[who % len(funders)]
        c0 = self.m.campaigns.get(cid)
        native = c0 is not None and c0.token == ETH
        value = amount if native else 0
        if bad >= 92:
            value = amount + 1 if native else 1

        def plan(t: int):
            if self.m.paused:
                raise Expect("EnforcedPause")
            c = self._camp(cid)
            if t >= c.posting_deadline:
                raise Expect("PostingClosed")
            if amount == 0:
                raise Expect("ZeroAmount")
            if value != (amount if native else 0):
                raise Expect("WrongNativeValue")
            if not native and sender not in APPROVED:
                raise Expect("ERC20InsufficientAllowance")

            def commit() -> None:
                c.funded_by[sender] = c.funded_by.get(sender, 0) + amount
                c.total_funded += amount
                self.m.balances[c.token][sender] -= amount
                self.m.funded[c.token] += amount
            return commit

        self._act("fund", sender, SEL["fund"] + _u(cid) + _u(amount), plan, value)

    @action(cpick=PICK, alloc=st.sampled_from((0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 4)),
            delta=st.sampled_from((0, 0, 0, 0, 1, -1, 0, 0, 0, 0)),
            mode=st.sampled_from(POST_MODES), subset=PICK, who=st.sampled_from(ACTORS))
    def post(self, cpick: int, alloc: int, delta: int, mode: str, subset: int, who: str) -> None:
        """``postRound`` relayed by anyone: usually a valid allocation of the next round id
        signed by ``threshold`` current signers (``subset`` picks which); or too few, an
        outsider, a stale version, an expired deadline, descending order, a duplicate, a garbage
        signature; the revoked allocation of this round id replayed verbatim; the next-but-one
        or previous round id; caps, zero total or root."""
        env = self.env
        skew = subset // 10
        cid = self._pick_campaign(
            cpick, lambda c, t: t < c.posting_deadline and c.next_round <= c.num_rounds
            and c.total_funded - c.total_allocated >= 50)
        c0 = self.m.campaigns.get(cid)
        next_round = c0.next_round if c0 else 1
        gaps = c0.gaps() if c0 else []
        target = next_round
        if gaps and (mode == "gap" or (subset // 2) % 2 == 0):
            target = gaps[subset % len(gaps)]  # fill a revoked round below the next id
            delta = 0
        if mode == "gap":
            mode = "ok"
        revoked = c0.rounds.get(target) if c0 else None
        if revoked is None or revoked.status != REVOKED:
            if mode == "replay":
                mode = "ok"
        elif subset % 2 == 0:
            mode = "replay"  # half the posts after a revocation try the replay
        if mode == "replay":  # re-relay the revoked allocation of that round id, verbatim
            alloc = revoked.alloc
            delta = 0
        tree, total = ALLOCS[alloc]
        root = env.trees[tree].root_bytes if tree is not None else bytes(32)
        rid = max(target + delta, 0)
        version = c0.version if c0 else 1
        deadline = FAR
        signers: list[int] = []  # signer indices, or -2 for a garbage signature
        if mode == "replay":
            version, signers = revoked.version, list(revoked.signed_by)
        elif c0 is not None:
            cur, thr = c0.signers, c0.threshold
            n = len(cur)
            chosen = [cur[(subset + i) % n] for i in range(thr)]
            by_addr = lambda s: int(SIGNER_ADDRS[s], 16)  # noqa: E731
            if mode == "all":
                signers = sorted(cur, key=by_addr)
            elif mode == "few":
                signers = sorted(chosen, key=by_addr)[:thr - 1]
            elif mode == "outsider":
                outsiders = [s for s in range(len(SIGNER_KEYS)) if s not in cur]
                chosen[subset % thr] = outsiders[skew % len(outsiders)]
                signers = sorted(chosen, key=by_addr)
            elif mode == "desc":
                signers = sorted(cur, key=by_addr, reverse=True)
            elif mode == "dup":
                signers = sorted(chosen, key=by_addr)
                signers = [signers[0], *signers]
            elif mode == "garbage":
                signers = sorted(chosen, key=by_addr)
                signers[subset % thr] = -2
            else:
                signers = sorted(chosen, key=by_addr)
            if mode == "stale":
                version = version - 1 if version > 1 and skew < 5 else version + 1
            if mode == "expired":
                deadline = EXPIRED
        digest = env.round_digest(cid, rid, root, total, version, deadline)
        sigs = [ZERO_SIG if s == -2 else env.sign(digest, SIGNER_KEYS[s]) for s in signers]
        data = SEL["postRound"] + abi_encode(
            ["(uint256,uint256,bytes32,uint256,bytes32,bytes32,bytes32,uint256,uint256)",
             "bytes[]"],
            [(cid, rid, root, total, *PROVENANCE, version, deadline), sigs])

        def plan(t: int):
            if self.m.paused:
                raise Expect("EnforcedPause")
            c = self._camp(cid)
            if t >= c.posting_deadline:
                raise Expect("PostingClosed")
            if t > deadline:
                raise Expect("SignatureExpired")
            existing = c.rounds.get(rid)
            into_gap = (rid < c.next_round and existing is not None
                        and existing.status == REVOKED)
            if rid != c.next_round and not into_gap:
                raise Expect("UnexpectedRoundId")
            if rid > c.num_rounds:
                raise Expect("TooManyRounds")
            if tree is None:
                raise Expect("ZeroMerkleRoot")
            if total == 0:
                raise Expect("ZeroRoundTotal")
            if total > c.round_cap:
                raise Expect("RoundCapExceeded")
            if total > c.total_funded - c.total_allocated:
                raise Expect("InsufficientUnallocated")
            if version != c.version:
                raise Expect("StaleSignerSet")
            if (rid, root) in c.revoked_roots:
                raise Expect("RevokedAllocation")
            if len(signers) < c.threshold:
                raise Expect("TooFewSignatures")
            previous = 0
            for s in signers:
                if s == -2:
                    raise Expect("InvalidSignature")
                if s not in c.signers:
                    raise Expect("UnknownSigner")
                a = int(SIGNER_ADDRS[s], 16)
                if a == previous:
                    raise Expect("DuplicateSigner")
                if a < previous:
                    raise Expect("SignersNotAscending")
                previous = a

            def commit() -> None:
                c.rounds[rid] = RoundM(alloc, tree, root, total, total, c.holder_cap, t,
                                       t + c.challenge, PENDING, version, tuple(signers))
                c.total_allocated += total
                if into_gap:
                    STATS.cases["post into a revoked gap"] += 1
                else:
                    c.next_round = rid + 1
            return commit

        self._act("post", who, data, plan)

    @action(cpick=PICK, who=PICK, delta=st.sampled_from((0, 0, -1, 1, 0, 0)), pick=PICK)
    def revoke(self, cpick: int, who: int, delta: int, pick: int) -> None:
        """``revokeRound`` of any round: usually one still in its window (the latest or an
        earlier one, which leaves a gap), sometimes one next to the latest, final, revoked or
        never posted; by the guardian or, sometimes, someone else."""
        cid = self._pick_campaign(cpick, lambda c, t: any(
            c.rounds[r].status == PENDING and t < c.rounds[r].finalizes_at
            for r in c.live_rounds()))
        c0 = self.m.campaigns.get(cid)
        guardian = c0.guardian if c0 else "guardian1"
        others = ("guardian2" if guardian == "guardian1" else "guardian1", "stranger", "deployer")
        sender = guardian if who < 70 else others[who % 3]
        latest = (c0.next_round if c0 else 1) - 1
        t1 = self.m.now + 1
        open_rounds = [r for r in (c0.live_rounds() if c0 else [])
                       if c0.rounds[r].status == PENDING and t1 < c0.rounds[r].finalizes_at]
        if len(open_rounds) >= 2 and pick < 35:  # below the latest: leaves a gap
            rid = open_rounds[:-1][pick % (len(open_rounds) - 1)]
        elif open_rounds and pick < 60:
            rid = open_rounds[pick % len(open_rounds)]
        else:
            rid = max(latest + delta, 0)

        def plan(t: int):
            c = self._camp(cid)
            if sender != c.guardian:
                raise Expect("NotGuardian")
            r = c.rounds.get(rid)
            if r is None or r.status != PENDING:
                raise Expect("WrongRoundStatus")
            if t >= r.finalizes_at:
                raise Expect("ChallengeWindowOver")

            def commit() -> None:
                r.status = REVOKED
                r.remaining = 0
                c.revoked_roots.add((rid, r.root))
                c.total_allocated -= r.total
                if rid != c.next_round - 1:
                    STATS.cases["revoke below the latest round"] += 1
                else:
                    nxt = rid
                    while nxt > 1 and c.rounds[nxt - 1].status == REVOKED:
                        nxt -= 1
                    c.next_round = nxt
            return commit

        self._act("revoke", sender, SEL["revokeRound"] + _u(cid) + _u(rid), plan)

    @action(cpick=PICK, alloc=st.sampled_from((0, 1)), subset=PICK)
    def outrun(self, cpick: int, alloc: int, subset: int) -> None:
        """The race of review item 17: a stranger relays the next round (signed by the current
        signers) while an earlier one is in its challenge window, the guardian revokes the
        earliest round still open, and the relayer posts another allocation into the gap (the
        node's re-post path); three actions, each predicted and checked."""
        self.post(cpick=cpick, alloc=alloc, delta=0, mode="ok", subset=subset, who="stranger")
        self.revoke(cpick=cpick, who=0, delta=0, pick=0)
        self.post(cpick=cpick, alloc=1 - alloc, delta=0, mode="gap", subset=subset | 1,
                  who="relayer")

    @action(cpick=PICK, pick=PICK, who=st.sampled_from(ACTORS))
    def finalize(self, cpick: int, pick: int, who: str) -> None:
        cid = self._pick_campaign(cpick, lambda c, t: any(
            c.rounds[r].status == PENDING for r in c.live_rounds()))
        rid = self._pick_round(self.m.campaigns.get(cid), pick)

        def plan(t: int):
            c = self._camp(cid)
            r = c.rounds.get(rid)
            if r is None or r.status != PENDING:
                raise Expect("WrongRoundStatus")
            if t < r.finalizes_at:
                raise Expect("ChallengeWindowOpen")

            def commit() -> None:
                r.status = FINALIZED
            return commit

        self._act("finalize", who, SEL["finalizeRound"] + _u(cid) + _u(rid), plan)

    def _use_leaf(self, c: CampaignM, sim: dict[int, list[Any]], rid: int, index: int,
                  account: str, amount: int, tree: int, t: int) -> None:
        """``_useLeaf`` on a simulation overlay ``sim[rid] = [status, remaining, bits]``."""
        r = c.rounds.get(rid)
        if rid not in sim:
            sim[rid] = (([r.status, r.remaining] if r else [NONE, 0])
                        + [set(c.bits.get(rid, ())), {}])
        s = sim[rid]
        if s[0] != FINALIZED:
            if s[0] != PENDING:
                raise Expect("WrongRoundStatus")
            if t < r.finalizes_at:
                raise Expect("ChallengeWindowOpen")
            s[0] = FINALIZED
        if index in s[2]:
            raise Expect("AlreadyClaimed")
        entry = self.env.trees[tree].entries[index] if r.tree == tree else None
        if entry is None or entry != (index, self.env.addr[account], amount):
            raise Expect("InvalidProof")
        already = s[3].get(account, c.paid_to.get((rid, account), 0))
        if already + amount > r.holder_cap:  # per account per round, all its leaves together
            raise Expect("HolderCapExceeded")
        if amount > s[1]:
            raise Expect("RoundOverClaimed")
        s[1] -= amount
        s[2].add(index)
        s[3][account] = already + amount

    def _commit_sim(self, c: CampaignM, sim: dict[int, list[Any]], paid: int, to: str) -> None:
        for rid, (status, remaining, bits, paid_to) in sim.items():
            r = c.rounds[rid]
            r.status, r.remaining = status, remaining
            c.bits[rid] = bits
            for account, total in paid_to.items():
                c.paid_to[(rid, account)] = total
        c.claimed_total += paid
        self._pay(c.token, to, paid)

    def _claim_single(self, cid: int, rpick: int, lpick: int, tamper: int, who: str) -> None:
        """``claim`` of one leaf, usually of the picked round's tree (any holder's)."""
        env = self.env
        c0 = self.m.campaigns.get(cid)
        rid = self._pick_round(c0, rpick, final=True)
        r0 = c0.rounds.get(rid) if c0 else None
        if r0 is not None and r0.tree is not None and lpick < 80:
            tree, pos = r0.tree, lpick % len(env.trees[r0.tree].entries)
        else:
            tree, pos = env.all_leaves[lpick % len(env.all_leaves)]
        index, account_addr, amount = env.trees[tree].entries[pos]
        account = env.actor_of[account_addr.lower()]
        if tamper >= 94:
            amount += 1
        elif tamper >= 90:
            account = HOLDERS[(HOLDERS.index(account) + 1) % len(HOLDERS)]
        data = SEL["claim"] + abi_encode(
            ["uint256", "uint256", "uint256", "address", "uint256", "bytes32[]"],
            [cid, rid, index, env.addr[account], amount, env.proofs[tree][pos]])

        def plan(t: int):
            c = self._camp(cid)
            if t >= c.claim_deadline:
                raise Expect("ClaimWindowClosed")
            sim: dict[int, list[Any]] = {}
            self._use_leaf(c, sim, rid, index, account, amount, tree, t)
            return lambda: self._commit_sim(c, sim, amount, account)

        self._act("claim", who, data, plan)

    @action(cpick=PICK, specs=st.lists(st.tuples(PICK, PICK), min_size=1, max_size=3),
            mode=st.sampled_from(CLAIM_MODES), holder=st.sampled_from(HOLDERS),
            recip=st.sampled_from(ACTORS), who=st.sampled_from(ACTORS), tamper=PICK)
    def claim(self, cpick: int, specs: list[tuple[int, int]], mode: str, holder: str,
              recip: str, who: str, tamper: int) -> None:
        """A claim: ``single`` (``claim``, one leaf: ``specs[0]`` picks round and leaf),
        ``rounds`` (``claimRounds``: up to three leaves of ``holder``, one per spec) or
        ``to_*`` (``claimRoundsTo``: paid to ``recip``, by the holder itself or relayed with the
        holder's signature over its current nonce, a wrong signer's, one over a used or future
        nonce, an expired one, or to address zero)."""
        env = self.env
        cid = self._pick_campaign(cpick, _claimable, share=80)
        if mode == "single":
            self._claim_single(cid, specs[0][0], specs[0][1], tamper, who)
            return
        if tamper >= 97:
            specs = []  # EmptyClaim
        c0 = self.m.campaigns.get(cid)
        leaves: list[tuple[int, int, int, int]] = []  # (round, tree, pos, amount)
        for rpick, lpick in specs:
            rid = self._pick_round(c0, rpick, final=True)
            r0 = c0.rounds.get(rid) if c0 else None
            mine = [(t_, p) for t_, p in env.holder_leaves[holder] if r0 and t_ == r0.tree]
            pool = mine or env.holder_leaves[holder]
            tree, pos = pool[lpick % len(pool)]
            leaves.append((rid, tree, pos, env.trees[tree].entries[pos][2]))
        if leaves and 90 <= tamper < 97:
            rid, tree, pos, amount = leaves[-1]
            leaves[-1] = (rid, tree, pos, amount + 1)
        encoded = [(rid, env.trees[tree].entries[pos][0], amount, env.proofs[tree][pos])
                   for rid, tree, pos, amount in leaves]
        account = env.addr[holder]
        leaf_t = "(uint256,uint256,uint256,bytes32[])[]"
        recipient, sender, deadline, sig = recip, who, FAR, b""
        if mode == "rounds":
            recipient = holder
            data = SEL["claimRounds"] + abi_encode(["uint256", "address", leaf_t],
                                                   [cid, account, encoded])
        else:
            if mode == "to_self":
                sender = holder
            elif sender == holder:
                sender = "relayer"
            recipient_addr = ZERO_ADDRESS if mode == "to_zero" else env.addr[recipient]
            if mode == "to_expired":
                deadline = EXPIRED
            signer = holder if mode != "to_badsig" else HOLDERS[(HOLDERS.index(holder) + 1) % 4]
            nonce = self.m.nonces[holder]
            if mode == "to_stale":  # the nonce of an authorisation already used or cancelled
                nonce = nonce - 1 if nonce > 0 else nonce + 1
            if mode != "to_self":
                sig = env.sign(env.recipient_digest(cid, account, recipient_addr, nonce,
                                                    deadline), env.key[signer])
            data = SEL["claimRoundsTo"] + abi_encode(
                ["uint256", "address", leaf_t, "address", "uint256", "bytes"],
                [cid, account, encoded, recipient_addr, deadline, sig])
        kind = "claim_batch"

        def plan(t: int):
            c = self._camp(cid)
            if t >= c.claim_deadline:
                raise Expect("ClaimWindowClosed")
            if mode != "rounds":
                if mode == "to_zero":
                    raise Expect("InvalidRecipientAuthorization")
                if sender != holder:
                    if t > deadline:
                        raise Expect("SignatureExpired")
                    if mode in ("to_badsig", "to_stale"):
                        raise Expect("InvalidRecipientAuthorization")
            if not leaves:
                raise Expect("EmptyClaim")
            sim: dict[int, list[Any]] = {}
            paid = 0
            for rid, tree, pos, amount in leaves:
                self._use_leaf(c, sim, rid, env.trees[tree].entries[pos][0], holder, amount,
                               tree, t)
                paid += amount
            uses_nonce = mode != "rounds" and sender != holder

            def commit() -> None:
                self._commit_sim(c, sim, paid, recipient)
                if uses_nonce:  # a relayed authorisation is used up
                    self.m.nonces[holder] += 1
            return commit

        self._act(kind, sender, data, plan)

    @action(cpick=PICK, who=PICK, wait=PICK, to=PICK)
    def reclaim(self, cpick: int, who: int, wait: int, to: int) -> None:
        """``reclaim`` by a sponsor (or not), or ``reclaimTo`` (``to >= 50``) naming another
        actor or, rarely, address zero; when no campaign has expired yet, ``wait < 25`` first
        moves the clock so that the call runs exactly at the campaign's claim deadline (an
        ``advance_time`` step)."""
        cid = self._pick_campaign(cpick, lambda c, t: t >= c.claim_deadline)
        callers = ("sponsorA", "sponsorB", "sponsorA", "sponsorB", "stranger", "H0", "deployer")
        sender = callers[who % len(callers)]
        c0 = self.m.campaigns.get(cid)
        if c0 is not None and wait < 25 and self.m.now + 1 < c0.claim_deadline:
            self._warp_to(c0.claim_deadline - 1)

        def plan(t: int):
            c = self._camp(cid)
            if t < c.claim_deadline:
                raise Expect("ClaimWindowOpen")
            funded = c.funded_by.get(sender, 0)
            if funded == 0:
                raise Expect("NotASponsor")
            if sender in c.reclaimed:
                raise Expect("AlreadyReclaimed")

            def commit() -> None:
                if not c.settled:
                    c.settled = True
                    c.unclaimed_at_expiry = c.total_funded - c.claimed_total
                amount = funded * c.unclaimed_at_expiry // c.total_funded
                c.reclaimed.add(sender)
                c.reclaimed_total += amount
                self._pay(c.token, payee or sender, amount)
            return commit

        if to < 50:
            payee = None
            self._act("reclaim", sender, SEL["reclaim"] + _u(cid), plan)
            return
        payee = None if to >= 95 else ACTORS[to % len(ACTORS)]

        def plan_to(t: int):
            if payee is None:
                raise Expect("ZeroReclaimRecipient")
            return plan(t)

        recipient_addr = ZERO_ADDRESS if payee is None else self.env.addr[payee]
        self._act("reclaim_to", sender, SEL["reclaimTo"] + _u(cid) + _a(recipient_addr),
                  plan_to)

    @action(op=PICK, cpick=PICK, who=PICK, set_id=st.integers(0, len(SIGNER_SETS) - 1),
            thr=st.sampled_from((2, 1, 0, 3, 2)))
    def rotate(self, op: int, cpick: int, who: int, set_id: int, thr: int) -> None:
        """Signer rotation in two steps: ``proposeSignerRotation`` by the admin (or someone
        else), ``executeSignerRotation`` by anyone once the delay has passed (when the clock is
        short of it, ``op`` sometimes first jumps to exactly ``executableAt``), or
        ``cancelSignerRotation`` by the guardian, the admin or a stranger."""
        cid = self._pick_campaign(cpick, (lambda c, t: c.pending_rotation is not None)
                                  if op < 50 else None)
        c0 = self.m.campaigns.get(cid)
        if op < 40:
            if c0 is not None and c0.pending_rotation is not None:
                executable_at = c0.pending_rotation[2]
                if (who // 3) % 2 == 0 and self.m.now + 1 < executable_at:
                    self._warp_to(executable_at - 1)
            self._execute_rotation(cid)
        elif op < 50:
            self._cancel_rotation(cid, who)
        else:
            self._propose_rotation(cid, who, set_id, thr)

    def _propose_rotation(self, cid: int, who: int, set_id: int, thr: int) -> None:
        c0 = self.m.campaigns.get(cid)
        admin = c0.admin if c0 else "deployer"
        sender = admin if who < 75 else ("stranger", "guardian1", "admin2", "deployer")[who % 4]
        new = SIGNER_SETS[set_id]
        addrs = [ZERO_ADDRESS if s == ZERO_SIGNER else SIGNER_ADDRS[s] for s in new]
        data = SEL["proposeSignerRotation"] + abi_encode(["uint256", "address[]", "uint256"],
                                                         [cid, addrs, thr])

        def plan(t: int):
            c = self._camp(cid)
            if sender != c.admin:
                raise Expect("NotCampaignAdmin")
            if len(new) == 0:
                raise Expect("InvalidCampaignParam")
            if thr == 0 or thr > len(new):
                raise Expect("InvalidCampaignParam")
            if ZERO_SIGNER in new or len(set(new)) != len(new):
                raise Expect("InvalidSignerSet")

            def commit() -> None:
                c.pending_rotation = (new, thr, t + c.rotation_delay)
            return commit

        self._act("rotate_propose", sender, data, plan)

    def _execute_rotation(self, cid: int) -> None:
        def plan(t: int):
            c = self._camp(cid)
            if c.pending_rotation is None:
                raise Expect("NoPendingRotation")
            new, thr, executable_at = c.pending_rotation
            if t < executable_at:
                raise Expect("RotationNotReady")

            def commit() -> None:
                c.version += 1
                c.signers = new
                c.threshold = thr
                c.pending_rotation = None
            return commit

        self._act("rotate_execute", "relayer", SEL["executeSignerRotation"] + _u(cid), plan)

    def _cancel_rotation(self, cid: int, who: int) -> None:
        c0 = self.m.campaigns.get(cid)
        roles = (c0.guardian, c0.admin) if c0 else ("guardian1", "deployer")
        sender = roles[who % 2] if who < 80 else "stranger"

        def plan(t: int):
            c = self._camp(cid)
            if sender not in (c.guardian, c.admin):
                raise Expect("NotAdminOrGuardian")
            if c.pending_rotation is None:
                raise Expect("NoPendingRotation")

            def commit() -> None:
                c.pending_rotation = None
            return commit

        self._act("rotate_cancel", sender, SEL["cancelSignerRotation"] + _u(cid), plan)

    @action(holder=st.sampled_from(HOLDERS + ("stranger",)))
    def cancel_authorizations(self, holder: str) -> None:
        """``cancelRecipientAuthorizations``: the sender's nonce moves on (anyone may call)."""

        def plan(t: int):
            def commit() -> None:
                if holder in self.m.nonces:
                    self.m.nonces[holder] += 1
            return commit

        self._act("cancel_authorizations", holder, SEL["cancelRecipientAuthorizations"], plan)

    @action(op=PICK, who=PICK)
    def pause_toggle(self, op: int, who: int) -> None:
        """Mostly the pauser flipping the state (unpausing soon after a pause), sometimes the
        wrong operation or the wrong caller."""
        sender = "deployer" if who < 75 else ("stranger", "guardian1", "admin2")[who % 3]
        unpause = op < 80 if self.m.paused else op >= 80

        def plan(t: int):
            if sender != "deployer":
                raise Expect("AccessControlUnauthorizedAccount")
            if unpause and not self.m.paused:
                raise Expect("ExpectedPause")
            if not unpause and self.m.paused:
                raise Expect("EnforcedPause")

            def commit() -> None:
                self.m.paused = not unpause
            return commit

        kind = "unpause" if unpause else "pause"
        self._act(kind, sender, SEL[kind], plan)

    @action(kind=st.integers(0, 11), x=PICK)
    def advance_time(self, kind: int, x: int) -> None:
        """Move the clock: a few seconds, a lot, or so that the next transaction executes exactly
        at (or one second before) a boundary: a pending round's ``finalizesAt``, the posting
        deadline or the claim deadline."""
        STATS.steps += 1
        STATS.ok["advance_time"] += 1
        now = self.m.now
        c = self.m.campaigns[1 + x % 3]
        boundary = None
        if kind < 5:  # the finalizesAt of a pending round (any campaign) still ahead
            ahead = sorted(r.finalizes_at for camp in self.m.campaigns.values()
                           for r in camp.rounds.values()
                           if r.status == PENDING and r.finalizes_at > now + 1)
            boundary = ahead[x % len(ahead)] if ahead else None
        elif kind == 5:
            boundary = c.posting_deadline
        elif kind == 8 and c.pending_rotation is not None:
            boundary = c.pending_rotation[2]
        elif kind in (6, 7):
            boundary = c.claim_deadline
        if boundary is not None:
            # the next transaction runs at target + 1: the boundary, or (a quarter of the
            # time) one second before it
            target = boundary - 1 - ((x // 3) % 4 == 3)
        elif kind < 11:
            target = now + 1 + x % 30
        else:
            target = now + 40 + x
        self._warp_to(max(target, now + 1), counted=True)

    def _warp_to(self, target: int, counted: bool = False) -> None:
        """Mine an empty block at ``target`` (the next transaction runs at ``target + 1``)."""
        if not counted:
            STATS.steps += 1
            STATS.ok["advance_time"] += 1
        self.env.rpc("evm_mine", [target])
        self.m.now = target

    @rule(data=st.data())
    def step(self, data: Any) -> None:
        """One action (weighted by :data:`ACTION_WEIGHTS`) with its drawn arguments."""
        name = data.draw(st.sampled_from(ACTION_TABLE), label="action")
        kwargs = data.draw(ACTION_ARGS[name], label=name)
        getattr(self, name)(**kwargs)

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def chain_matches_model(self) -> None:
        m = self.m
        pool_balance: dict[str, int] = {}
        paid_by_rounds: Counter = Counter()  # campaign -> Σ (total − remaining), from getRound
        for what, result in self.env.views():
            tag = what[0]
            if tag == "paused":
                assert bool(int(result, 16)) == m.paused, "paused()"
            elif tag == "nonce":
                assert int(result, 16) == m.nonces[what[1]], (
                    f"nonces({what[1]}) {int(result, 16)} != model {m.nonces[what[1]]}")
            elif tag == "bal":
                asset, actor = what[1], what[2]
                value = int(result, 16)
                if actor is None:
                    pool_balance[asset] = value
                else:
                    assert value == m.balances[asset][actor], (
                        f"{actor}'s {asset} balance {value} != model {m.balances[asset][actor]}")
            elif tag == "campaign":
                c = m.campaigns[what[1]]
                w = _words(result, 17)
                got = dict(threshold=w[3], version=w[4], next_round=w[6], total_funded=w[13],
                           total_allocated=w[14], settled=bool(w[15]), unclaimed=w[16])
                want = dict(threshold=c.threshold, version=c.version, next_round=c.next_round,
                            total_funded=c.total_funded, total_allocated=c.total_allocated,
                            settled=c.settled, unclaimed=c.unclaimed_at_expiry)
                assert got == want, f"getCampaign({c.cid}) {got} != model {want}"
            elif tag == "round":
                c = m.campaigns[what[1]]
                r = c.rounds.get(what[2])
                w = _words(result, 7)
                if r is None:
                    want_w = [0] * 7
                else:
                    status = r.status
                    if status == PENDING and m.now >= r.finalizes_at:
                        status = FINALIZED
                    want_w = [int.from_bytes(r.root, "big"), r.total, r.remaining, r.holder_cap,
                              r.posted_at, r.finalizes_at, status]
                assert w == want_w, f"getRound({what[1]}, {what[2]}) {w} != model {want_w}"
                if w[6] in (PENDING, FINALIZED):
                    paid_by_rounds[c.cid] += w[1] - w[2]
                    assert what[2] < c.next_round, (
                        f"round {what[2]} of campaign {c.cid} is live at/above the next id "
                        f"{c.next_round}")

        for asset in (TOKEN, ETH):
            camps = [c for c in m.campaigns.values() if c.token == asset]
            for c in camps:
                assert c.balance >= 0, f"campaign {c.cid} model balance {c.balance} < 0"
                for (rid, holder), paid in c.paid_to.items():
                    assert paid <= c.rounds[rid].holder_cap, (
                        f"{holder} paid {paid} from round {rid} of {c.cid}, above the cap")
                live_total = sum(c.rounds[r].total for r in c.live_rounds())
                assert c.total_allocated == live_total <= c.total_funded, (
                    f"campaign {c.cid}: allocated {c.total_allocated}, live rounds {live_total}, "
                    f"funded {c.total_funded}")
                assert c.claimed_total == paid_by_rounds[c.cid] <= live_total, (
                    f"campaign {c.cid}: claimed {c.claimed_total}, rounds on chain paid "
                    f"{paid_by_rounds[c.cid]}, live total {live_total}")
            held = sum(c.balance for c in camps)
            assert held == pool_balance[asset], (
                f"{asset}: Σ campaign balances {held} != pool balance {pool_balance[asset]}")
            assert pool_balance[asset] + m.paid[asset] == m.funded[asset], (
                f"{asset}: balance {pool_balance[asset]} + paid {m.paid[asset]} != funded "
                f"{m.funded[asset]}")
            assert pool_balance[asset] + m.ev_paid[asset] == m.ev_funded[asset], (
                f"{asset} (events): balance {pool_balance[asset]} + paid {m.ev_paid[asset]} != "
                f"funded {m.ev_funded[asset]}")


# -- running ---------------------------------------------------------------------------------------


def run_machine(sequences: int, steps: int, *, derandomize: bool = False) -> float:
    """Run :class:`PoolMachine` for ``sequences`` examples of ``steps`` steps; wall seconds.

    Raises whatever the machine raises (the falsifying sequence is printed by hypothesis).
    """
    get_env()
    s = settings(
        max_examples=sequences, stateful_step_count=steps, deadline=None, database=None,
        derandomize=derandomize, suppress_health_check=list(HealthCheck), print_blob=True,
    )
    start = time.perf_counter()
    run_state_machine_as_test(PoolMachine, settings=s)
    return time.perf_counter() - start


def summary(wall_s: float) -> str:
    lines = [f"sequences {STATS.sequences}  steps {STATS.steps}  wall {wall_s:.1f} s"]
    lines.append("successful: " + ", ".join(f"{k} {v}" for k, v in sorted(STATS.ok.items())))
    lines.append("reverted:   " + ", ".join(f"{k} {v}" for k, v in
                                            sorted(STATS.reverted.items())))
    return "\n".join(lines)


# -- pytest ----------------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # bench use without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="module")
    def env() -> Any:
        yield get_env()
        close_env()

    def test_pool_invariants(env: Env, capsys: Any, record_property: Any) -> None:
        sequences = int(os.environ.get("INVARIANT_SEQUENCES", "25"))
        steps = int(os.environ.get("INVARIANT_STEPS", "12"))
        randomize = os.environ.get("INVARIANT_RANDOM", "") not in ("", "0")
        STATS.reset()
        wall = run_machine(sequences, steps, derandomize=not randomize)
        text = summary(wall)
        with capsys.disabled():
            print("\n[invariants] " + text.replace("\n", "\n[invariants] "))
        record_property("sequences", STATS.sequences)
        record_property("steps", STATS.steps)
        assert STATS.sequences >= sequences
        assert STATS.steps > 0
        assert STATS.ok["post"] > 0, "no round was ever posted: the run is vacuous"
        assert STATS.payouts > 0, "no claim or reclaim succeeded: the run is vacuous"
