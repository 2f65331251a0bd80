"""Chain paths the other tests leave out, on a real anvil node (no mocks): a holder's claim
through :func:`offchain.oracle.operations.claim` and the CLI, the sponsor's reclaim after
expiry, sends that wait for several confirmations, and a whole tiny campaign through a faulty
RPC endpoint.

Rounds are posted without ML: a payout tree built here, signed by the campaign's signers (anvil
dev accounts 5–7, as ``--dev`` creates it) and written as ``round_NNN/tree.json``, the file
``operations.claim`` reads its proofs from.
"""

from __future__ import annotations

import io
import json
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from offchain.allocation import PayoutTree, RoundAllocation
from offchain.chain import (
    AnvilNode,
    ChainClient,
    ChainError,
    ContractRevert,
    address_of,
    compile_contracts,
)
from offchain.chain.pool import PoolClient, RoundPosted
from offchain.cli.main import EXIT_NOTHING_TO_CLAIM, app
from offchain.config import Settings
from offchain.data.holders import mnist_holders
from offchain.errors import ConfigError
from offchain.layout import RoundPaths
from offchain.oracle import operations
from offchain.oracle.campaign import run_campaign
from offchain.oracle.deployment import Deployment
from offchain.oracle.signing import sign_round_k_of_n
from offchain.utils import write_json
from tests.chain_fixtures import HOUR, PROVENANCE, WEI, payout_tree
from tests.rpc_fault_proxy import FaultPlan, FaultProxy

pytest_plugins = ["tests.chain_fixtures"]

FUNDED_WEI = 40 * WEI
AMOUNTS = [3 * WEI, 5 * WEI + 7, 11 * WEI]
"""The round's leaves (one with an odd wei count, to catch any rounding)."""


@dataclass
class PostedRound:
    """A campaign created through ``operations`` with round 1 posted (not yet final)."""

    settings: Settings
    deployment: Deployment
    campaign_id: int
    chain: ChainClient
    pool: PoolClient
    tree: PayoutTree
    holder_keys: list[str]
    sponsor_key: str

    @property
    def holders(self) -> list[str]:
        return [address_of(k) for k in self.holder_keys]

    def balance(self, account: str) -> int:
        return self.pool.token(self.campaign_id).balance_of(account)

    def finalize(self) -> None:
        info = self.pool.get_campaign(self.campaign_id)
        self.chain.increase_time(info.challenge_window_s + 1)
        self.pool.finalize_round(self.sponsor_key, self.campaign_id, 1)

    def expire(self) -> None:
        """Advance the chain clock to the claim deadline."""
        deadline = self.pool.get_campaign(self.campaign_id).claim_deadline
        self.chain.increase_time(max(deadline - self.chain.block_timestamp(), 0))


def _fresh_keys(tag: int, n: int) -> list[str]:
    """Keys of accounts no other test uses (so their token balances start at 0)."""
    return ["0x" + f"{tag:08x}{i + 1:056x}" for i in range(n)]


@pytest.fixture()
def posted(
    anvil: AnvilNode,
    chain: ChainClient,
    compiled: dict,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> PostedRound:
    settings = Settings(
        rpc_url=anvil.rpc_url, run_dir=tmp_path, n_rounds=2, total_budget_wei=100 * WEI
    )
    deployment = operations.deploy(settings, dev=True)
    campaign_id = operations.create_campaign(settings, deployment, dev=True)
    operations.fund(settings, deployment, campaign_id, FUNDED_WEI, dev=True)
    pool = PoolClient(
        chain, deployment.pool, compiled["CompensationPool"].abi, compiled["TestToken"].abi
    )
    keys = anvil.private_keys
    sponsor_key, signer_keys = keys[2], keys[5:8]
    holder_keys = _fresh_keys(zlib.crc32(request.node.name.encode()), len(AMOUNTS))
    for key in holder_keys:  # holders send their own claims
        chain.set_eth_balance(address_of(key), WEI)
    tree = payout_tree([address_of(k) for k in holder_keys], AMOUNTS)
    write_json(RoundPaths(tmp_path, 1).tree, tree.to_json())
    allocation = RoundAllocation(
        campaign_id=campaign_id,
        round_id=1,
        merkle_root=tree.root,
        total_wei=tree.total_wei,
        signer_set_version=1,
        deadline=chain.block_timestamp() + HOUR,
        **PROVENANCE,
    )
    signatures = sign_round_k_of_n(
        signer_keys[: settings.oracle_threshold], chain.chain_id, pool.address, allocation
    )
    pool.post_round(sponsor_key, allocation, signatures)
    return PostedRound(
        settings, deployment, campaign_id, chain, pool, tree, holder_keys, sponsor_key
    )


def test_claim_pays_exactly_once_and_refuses_wrong_leaves(posted: PostedRound) -> None:
    p, cid = posted, posted.campaign_id
    key, holder = p.holder_keys[0], p.holders[0]

    early = operations.claim(p.settings, p.deployment, cid, key)
    assert (early.rounds, early.amount_wei, early.tx_hash) == ([], 0, None)
    assert early.skipped == {1: "challengeable"}

    p.finalize()
    before = p.balance(holder)
    result = operations.claim(p.settings, p.deployment, cid, key)
    assert result.holder == holder and result.rounds == [1]
    assert result.amount_wei == AMOUNTS[0] and result.tx_hash is not None
    assert p.balance(holder) - before == AMOUNTS[0]
    assert p.pool.is_claimed(cid, 1, 0)

    again = operations.claim(p.settings, p.deployment, cid, key)
    assert (again.rounds, again.amount_wei, again.tx_hash) == ([], 0, None)
    assert again.skipped == {1: "already claimed"}
    with pytest.raises(ContractRevert) as info:  # the contract itself refuses a replay
        p.pool.claim(key, cid, 1, 0, holder, AMOUNTS[0], p.tree.proof(0))
    assert (info.value.name, info.value.args) == ("AlreadyClaimed", (cid, 1, 0))
    assert p.balance(holder) - before == AMOUNTS[0]

    other_key, other = p.holder_keys[1], p.holders[1]
    for amount, proof in ((AMOUNTS[1] + 1, p.tree.proof(1)), (AMOUNTS[1], p.tree.proof(2))):
        with pytest.raises(ContractRevert) as info:
            p.pool.claim(other_key, cid, 1, 1, other, amount, proof)
        assert (info.value.name, info.value.args) == ("InvalidProof", (cid, 1, 1, other, amount))
    assert p.balance(other) == 0 and not p.pool.is_claimed(cid, 1, 1)


def test_claim_skips_a_tree_json_that_is_not_the_posted_root(
    posted: PostedRound, tmp_path: Path
) -> None:
    p = posted
    p.finalize()
    forged = payout_tree(p.holders, [AMOUNTS[0] * 2, *AMOUNTS[1:]])
    forged_dir = tmp_path / "forged" / "round_001"
    write_json(forged_dir / "tree.json", forged.to_json())
    result = operations.claim(
        p.settings, p.deployment, p.campaign_id, p.holder_keys[0], round_dirs=[forged_dir]
    )
    assert result.tx_hash is None and result.amount_wei == 0
    assert result.skipped[1].startswith("on-chain root") and "differs" in result.skipped[1]
    assert p.balance(p.holders[0]) == 0


def test_cli_claim_with_key_file(posted: PostedRound, tmp_path: Path) -> None:
    p = posted
    p.finalize()
    key_file = tmp_path / "holder.key"
    key_file.write_text(p.holder_keys[1] + "\n")
    common = ["--rpc-url", p.settings.rpc_url, "--run-dir", str(tmp_path), "--json"]
    runner = CliRunner()

    result = runner.invoke(app, ["claim", "--key-file", str(key_file), *common])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["holder"] == p.holders[1] and record["rounds"] == [1]
    assert record["amount_wei"] == str(AMOUNTS[1]) and record["tx_hash"].startswith("0x")
    assert p.balance(p.holders[1]) == AMOUNTS[1]

    result = runner.invoke(app, ["claim", "--key-file", str(key_file), *common])
    assert result.exit_code == EXIT_NOTHING_TO_CLAIM, result.output  # nothing left: says so
    record = json.loads(result.stdout)
    assert record["amount_wei"] == "0" and record["tx_hash"] is None
    assert record["skipped"] == {"1": "already claimed"}
    assert p.balance(p.holders[1]) == AMOUNTS[1]

    result = runner.invoke(app, ["claim", *common])  # no key given
    assert result.exit_code == 1 and "--key-file" in result.output


def test_reclaim_after_expiry_returns_exactly_the_unclaimed_funds_once(
    posted: PostedRound,
) -> None:
    p, cid = posted, posted.campaign_id
    p.finalize()
    operations.claim(p.settings, p.deployment, cid, p.holder_keys[0])
    operations.claim(p.settings, p.deployment, cid, p.holder_keys[2])
    claimed = AMOUNTS[0] + AMOUNTS[2]
    sponsor = address_of(p.sponsor_key)
    p.expire()

    with pytest.raises(ContractRevert) as info:  # holder 1 waited too long
        operations.claim(p.settings, p.deployment, cid, p.holder_keys[1])
    assert info.value.name == "ClaimWindowClosed"
    assert info.value.args[0] == cid

    before = p.balance(sponsor)
    result = operations.reclaim(p.settings, p.deployment, cid, dev=True)
    # The only sponsor gets back everything not claimed: unallocated plus holder 1's leaf.
    assert result.sponsor == sponsor and result.amount_wei == FUNDED_WEI - claimed
    assert p.balance(sponsor) - before == FUNDED_WEI - claimed
    assert p.balance(p.pool.address) == 0
    info_after = p.pool.get_campaign(cid)
    assert info_after.settled and p.pool.has_reclaimed(cid, sponsor)

    with pytest.raises(ContractRevert) as info:
        operations.reclaim(p.settings, p.deployment, cid, dev=True)
    assert (info.value.name, info.value.args) == ("AlreadyReclaimed", (cid, sponsor))
    assert p.balance(sponsor) - before == FUNDED_WEI - claimed


def test_send_waits_for_confirmations(anvil: AnvilNode, chain: ChainClient) -> None:
    sender_key = anvil.private_keys[3]
    to = address_of(_fresh_keys(0xC0F, 1)[0])
    client = ChainClient(anvil.rpc_url, confirmations=3, timeout=20.0)
    stop = threading.Event()

    def miner() -> None:  # automining anvil: blocks only come with transactions
        while not stop.wait(0.2):
            chain.mine()

    thread = threading.Thread(target=miner, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        receipt = client.send_eth(sender_key, to, 12345)
        elapsed = time.monotonic() - started
        head = chain.w3.eth.block_number
    finally:
        stop.set()
        thread.join(timeout=5)
    assert receipt["status"] == 1
    assert head >= int(receipt["blockNumber"]) + 2
    assert 0.2 <= elapsed < 10, elapsed  # waited for two mined blocks, not much longer
    assert chain.eth_balance(to) == 12345


def test_send_without_enough_confirmations_times_out(anvil: AnvilNode) -> None:
    client = ChainClient(anvil.rpc_url, confirmations=2, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ChainError, match="fewer than 2 confirmations"):
        client.send_eth(anvil.private_keys[3], address_of(_fresh_keys(0xC10, 1)[0]), 1)
    assert time.monotonic() - started < 5


CAMPAIGN_FAULTS = FaultPlan(
    seed=77,
    drop_request=0.04,
    delay=0.04,
    http_502=0.04,
    drop_response=0.03,
    send_drop_response=0.2,
    delay_s=(0.005, 0.05),
)
"""About 15 % of requests faulted, a fifth of raw sends lose their answer; six faults in a row
(the default retry policy's attempts) are then too rare to make the test flaky."""


def test_tiny_campaign_through_faulty_rpc_pays_every_holder_exactly(tmp_path: Path) -> None:
    with AnvilNode() as node, FaultProxy(node.rpc_url, CAMPAIGN_FAULTS) as proxy:
        keys = node.private_keys
        settings = Settings.for_profile(
            "tiny",
            run_dir=tmp_path / "run",
            rpc_url=proxy.url,
            sponsor_key=keys[2],
            oracle_keys=keys[5:8],
            challenge_window_s=0,  # a remote chain's clock is not advanced: don't wait an hour
        )
        direct = ChainClient(node.rpc_url)
        # On a remote chain nobody tops up the holders' gas; they claim themselves.
        for holder in mnist_holders(
            n_holders=settings.n_holders, sizes=settings.holder_sizes, seed=settings.seed
        ):
            direct.set_eth_balance(holder.address, WEI)

        result = run_campaign(settings, console=Console(file=io.StringIO(), width=160), fresh=True)

        compiled = compile_contracts()
        pool = PoolClient(
            direct, result.pool_address, compiled["CompensationPool"].abi, compiled["TestToken"].abi
        )
        campaign_id = int(result.extras["campaign_id"])  # type: ignore[arg-type]
        posted_events = pool.events("RoundPosted", campaignId=campaign_id)
        assert result.rounds == settings.n_rounds
        assert [e.round_id for e in posted_events if isinstance(e, RoundPosted)] == list(
            range(1, settings.n_rounds + 1)
        )
        assert pool.next_round_id(campaign_id) == settings.n_rounds + 1
        assert result.balances_wei == result.allocated_wei
        assert sum(result.allocated_wei) == settings.total_budget_wei
        faulted = sum(n for (fault, _), n in proxy.counts.items() if fault != "forward")
        total = sum(proxy.counts.values())
        assert proxy.faults("drop_response", "eth_sendRawTransaction") > 0, proxy.counts
        for fault in ("drop_request", "delay", "http_502", "drop_response"):
            assert proxy.faults(fault) > 0, proxy.counts
        assert 0.05 * total < faulted < 0.4 * total, (faulted, total)


def test_claim_reads_the_given_round_folder_and_rejects_other_names(
    posted: PostedRound, tmp_path: Path
) -> None:
    p = posted
    p.finalize()
    unpadded = tmp_path / "elsewhere" / "round_1"  # not round_001: its own tree.json counts
    write_json(unpadded / "tree.json", p.tree.to_json())
    result = operations.claim(
        p.settings, p.deployment, p.campaign_id, p.holder_keys[2], round_dirs=[unpadded]
    )
    assert result.rounds == [1] and result.amount_wei == AMOUNTS[2]
    assert p.balance(p.holders[2]) == AMOUNTS[2]
    with pytest.raises(ConfigError, match="not a round folder"):
        operations.claim(
            p.settings, p.deployment, p.campaign_id, p.holder_keys[1], round_dirs=[tmp_path]
        )
