"""The sponsor page (``GET /sponsor``) in a real Chromium over the tiny real campaign on anvil:
the sponsor (anvil dev account 2, which anvil signs for) sees the charts with the allocation
files' totals and the escrow the chain holds, tops up through the page (approve, then fund: the
pool's totals rise by exactly the amount), cannot reclaim before the claim deadline and is told
why, reclaims exactly its share once anvil's clock has passed it, and sees the contract's
decoded refusal for a second reclaim; a non-sponsor is told it funded nothing; no wallet, a
wrong network, a rejected transaction, a closed campaign and a node that is down are clear
messages; the page works with the keyboard and at 375 px.

Tests that change the chain (funding, time travel, reclaiming) undo it with ``chain_snapshot``.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from eth_account import Account

from offchain.chain.client import ChainClient, TokenClient
from offchain.chain.pool import PoolClient
from tests.browser.campaign import FUNDED_WEI, anvil_rpc, chain_snapshot
from tests.browser.eip1193 import Eip1193Bridge
from tests.browser.support import PHONE, ROOT, serve_api

ABI_DIR = ROOT / "offchain" / "api" / "web" / "abi"
TOKEN = 10**18
OUTSIDER = 7
"""Index of the anvil dev account that never funds the campaign."""


@pytest.fixture
def chain(campaign):
    """``(pool, token)`` clients of the campaign's contracts (ABIs as the pages bundle them).

    One per test: a client keeps the next nonce of each sender it sent from, which an
    ``evm_revert`` of an earlier test would leave ahead of the chain's."""
    pool_abi = json.loads((ABI_DIR / "CompensationPool.json").read_text())
    erc20_abi = json.loads((ABI_DIR / "ERC20.json").read_text())
    client = ChainClient(campaign.node.rpc_url)
    pool = PoolClient(client, campaign.deployment["pool"], pool_abi, token_abi=erc20_abi)
    token = TokenClient(client, campaign.deployment["token"], erc20_abi)
    return pool, token


def _open(page, base_url: str, campaign, account: str | None = None, **bridge_options):  # noqa: ANN001
    """Load the sponsor page with a wallet connected as ``account`` (default: the sponsor)."""
    bridge = Eip1193Bridge(campaign.node.rpc_url, campaign.node.chain_id,
                           account or campaign.sponsor, **bridge_options)
    bridge.install(page.context)
    page.goto(base_url + "/sponsor")
    return bridge


def _connect(page) -> None:  # noqa: ANN001 (a Playwright Page)
    """Press "Connect wallet" and wait for the escrow (about 20 wallet requests, each through
    the bridge to anvil: allow for a busy machine)."""
    page.click("#connect")
    page.wait_for_selector("#escrow dd[data-field='total-funded']", timeout=15_000)


def _escrow(page, field: str) -> int:  # noqa: ANN001
    return int(page.get_attribute(f"#escrow dd[data-field='{field}']", "data-wei"))


def _message(page, kind: str) -> str:  # noqa: ANN001
    return page.inner_text(f"#messages .message-{kind}", timeout=15_000)


def _time_travel_past(rpc_url: str, timestamp: int) -> None:
    now = int(anvil_rpc(rpc_url, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    anvil_rpc(rpc_url, "evm_increaseTime", [max(1, timestamp - now + 1)])
    anvil_rpc(rpc_url, "evm_mine")


def _paid(pool: PoolClient, campaign_id: int) -> int:
    info = pool.get_campaign(campaign_id)
    rounds = [pool.get_round(campaign_id, r) for r in range(1, info.next_round_id)]
    return sum(r.total_wei - r.remaining_wei for r in rounds if r.status != 3)  # 3: Revoked


def test_sponsor_sees_the_charts_with_the_right_totals(campaign_api, campaign, chain,
                                                      new_page, doc_screenshot):
    pool, _ = chain
    page = new_page()
    _open(page, campaign_api.base_url, campaign)
    allocations = campaign.allocations()
    page.wait_for_function("() => window.sponsorCharts && window.sponsorCharts.payments",
                           timeout=15_000)
    charts = page.evaluate("""() => {
        const c = window.sponsorCharts;
        const pick = (chart) => ({labels: chart.data.labels,
            sets: chart.data.datasets.map(d => ({label: d.label, wei: d.wei, n: d.data.length}))});
        return {budgets: pick(c.budgets), payments: pick(c.payments)};
    }""")
    budgets = {s["label"]: [int(w) for w in s["wei"]] for s in charts["budgets"]["sets"]}
    assert charts["budgets"]["labels"] == ["Round 1", "Round 2"]
    assert budgets["Budget"] == [int(a["budget_wei"]) for a in allocations]
    sums = [sum(int(h["amount_wei"]) for h in a["holders"]) for a in allocations]
    assert budgets["Allocated"] == sums
    # Claimed: as the node's report says (the API's chain watch; other tests' claims, undone by
    # evm_revert, may still be in its set, so compare with the report rather than with 0).
    report = httpx.get(f"{campaign_api.base_url}/campaigns/{campaign.campaign_id}/report",
                       timeout=5).json()
    assert budgets["Claimed"] == [int(r["claimed_wei"]) for r in report["rounds"]]
    # The stacked chart: one dataset per round, one bar per holder, each round's sum exact.
    payments = charts["payments"]
    assert [s["label"] for s in payments["sets"]] == ["Round 1", "Round 2"]
    assert payments["labels"] == [h["name"] for h in allocations[0]["holders"]]
    assert [sum(int(w) for w in s["wei"]) for s in payments["sets"]] == sums
    # The accessible tables and the summary say the same.
    cells = page.eval_on_selector_all("#rounds-table tbody tr td:nth-child(4)",
                                      "cells => cells.map(c => c.dataset.wei)")
    assert [int(c) for c in cells] == sums
    assert int(page.get_attribute("#total-allocated", "data-wei")) == sum(sums)
    assert int(page.get_attribute("#total-claimed", "data-wei")) + int(
        page.get_attribute("#total-unclaimed", "data-wei")) == sum(sums)
    assert page.locator("#payments-table tbody tr").count() == len(allocations[0]["holders"])

    _connect(page)
    info = pool.get_campaign(campaign.campaign_id)
    assert _escrow(page, "total-funded") == info.total_funded_wei == FUNDED_WEI
    assert _escrow(page, "allocated") == info.total_allocated_wei == sum(sums)
    assert _escrow(page, "unallocated") == info.unallocated_wei
    assert _escrow(page, "claimed") == _paid(pool, campaign.campaign_id)
    assert _escrow(page, "funded-by") == FUNDED_WEI
    sponsor_row = page.locator(f"#funders tr[data-sponsor='{campaign.sponsor}'] td.num")
    assert int(sponsor_row.get_attribute("data-wei")) == FUNDED_WEI
    assert "(you)" in page.inner_text("#funders")
    assert re.search(r"Claim deadline: .* UTC, in \d+ d", page.inner_text("#deadline"))
    page.wait_for_timeout(1_100)  # the countdown ticks in chain time
    doc_screenshot(page, "page_sponsor")


def test_reclaim_is_disabled_before_the_claim_deadline_with_the_reason(campaign_api, campaign,
                                                                         new_page):
    page = new_page()
    _open(page, campaign_api.base_url, campaign)
    assert page.is_disabled("#reclaim")  # already in the server's HTML, before any wallet
    _connect(page)
    assert page.is_disabled("#reclaim")
    why = page.inner_text("#reclaim-why")
    assert re.match(r"Claims are open until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in \d+ d .*\); "
                    r"you can reclaim after that\.", why), why
    assert page.get_attribute("#reclaim", "aria-describedby") == "reclaim-why"


def test_sponsor_tops_up_through_the_page_and_the_pool_rises_by_exactly_the_amount(
        campaign_api, campaign, chain, new_page):
    pool, token = chain
    amount = 250 * TOKEN + TOKEN // 2 + 1  # 250.500000000000000001: exact to the last wei
    with chain_snapshot(campaign.node.rpc_url):
        token.mint(campaign.sponsor_key, campaign.sponsor, amount)
        before = pool.get_campaign(campaign.campaign_id).total_funded_wei
        mine_before = pool.funded_by(campaign.campaign_id, campaign.sponsor)
        page = new_page()
        bridge = _open(page, campaign_api.base_url, campaign)
        _connect(page)
        page.fill("#fund-amount", "250.500000000000000001")
        page.press("#fund-amount", "Enter")  # the form submits from the keyboard
        assert "Funded 250.500000000000000001" in _message(page, "success")
        steps = page.eval_on_selector_all("#fund-steps li", "items => items.map(i => i.innerText)")
        assert len(steps) == 2
        assert steps[0].startswith("Step 1 of 2: approve") and "done" in steps[0]
        assert steps[1].startswith("Step 2 of 2: fund") and "done" in steps[1]
        info = pool.get_campaign(campaign.campaign_id)
        assert info.total_funded_wei - before == amount
        assert pool.funded_by(campaign.campaign_id, campaign.sponsor) - mine_before == amount
        assert _escrow(page, "total-funded") == info.total_funded_wei  # the page read it again
        sent = [m for m, _ in bridge.calls if m == "eth_sendTransaction"]
        assert len(sent) == 2  # approve, then fund: two wallet steps


def test_after_the_deadline_the_sponsor_reclaims_exactly_its_share_once(
        campaign_api, campaign, chain, new_page):
    pool, token = chain
    cid = campaign.campaign_id
    with chain_snapshot(campaign.node.rpc_url):
        info = pool.get_campaign(cid)
        _time_travel_past(campaign.node.rpc_url, info.claim_deadline)
        funded = pool.funded_by(cid, campaign.sponsor)
        share = funded * (info.total_funded_wei - _paid(pool, cid)) // info.total_funded_wei
        balance = token.balance_of(campaign.sponsor)
        page = new_page()
        _open(page, campaign_api.base_url, campaign)
        _connect(page)
        assert page.is_enabled("#reclaim")
        assert "Claim deadline" in page.inner_text("#deadline")
        assert "passed" in page.inner_text("#deadline")
        page.click("#reclaim")
        assert "Done: you reclaimed your share" in _message(page, "success")
        assert token.balance_of(campaign.sponsor) - balance == share
        assert pool.has_reclaimed(cid, campaign.sponsor)
        assert "has reclaimed its share" in page.inner_text("#reclaim-why")
        page.click("#reclaim")  # the contract refuses a second one; the page says so, decoded
        error = _message(page, "error")
        assert error == (f"The contract refused: AlreadyReclaimed(campaignId: {cid}, "
                         f"sponsor: {campaign.sponsor}).")
        assert token.balance_of(campaign.sponsor) - balance == share


def test_an_account_that_did_not_fund_is_told_so_and_its_reclaim_is_refused(
        campaign_api, campaign, chain, new_page):
    pool, _ = chain
    outsider = Account.from_key(campaign.node.private_keys[OUTSIDER]).address
    assert pool.funded_by(campaign.campaign_id, outsider) == 0
    with chain_snapshot(campaign.node.rpc_url):
        _time_travel_past(campaign.node.rpc_url,
                          pool.get_campaign(campaign.campaign_id).claim_deadline)
        page = new_page()
        _open(page, campaign_api.base_url, campaign, outsider)
        _connect(page)
        assert _escrow(page, "funded-by") == 0
        assert "did not fund this campaign" in page.inner_text("#reclaim-why")
        page.click("#reclaim")
        assert _message(page, "error") == (
            f"The contract refused: NotASponsor(campaignId: {campaign.campaign_id}, "
            f"sponsor: {outsider}).")


def test_wallet_failures_are_clear_messages(campaign_api, campaign, chain, new_page):
    pool, token = chain
    base = campaign_api.base_url
    page = new_page()  # no wallet in this browser
    page.goto(base + "/sponsor")
    page.click("#connect")
    assert _message(page, "error").startswith("No wallet found in this browser")
    assert page.is_hidden("#wallet-panel")

    page = new_page()
    _open(page, base, campaign, wallet_chain_id=1)  # the wallet is on another chain
    page.click("#connect")
    assert _message(page, "error").startswith(
        f"Wrong network: your wallet is on chain 1, but this campaign is on chain "
        f"{campaign.node.chain_id}.")

    with chain_snapshot(campaign.node.rpc_url):
        token.mint(campaign.sponsor_key, campaign.sponsor, 5 * TOKEN)
        before = pool.get_campaign(campaign.campaign_id).total_funded_wei
        page = new_page()
        _open(page, base, campaign, reject={"eth_sendTransaction"})
        _connect(page)
        page.fill("#fund-amount", "5")
        page.click("#fund")
        assert _message(page, "error") == (
            "You rejected the request in your wallet: nothing was signed or sent.")
        assert "failed" in page.inner_text("#fund-steps")
        assert pool.get_campaign(campaign.campaign_id).total_funded_wei == before

        page.fill("#fund-amount", "1.5x")
        page.click("#fund")
        assert re.fullmatch(r"Enter an amount in \S+, e\.g\. 250\.5\.", _message(page, "error"))

        info = pool.get_campaign(campaign.campaign_id)
        _time_travel_past(campaign.node.rpc_url, info.posting_deadline)
        page = new_page()
        _open(page, base, campaign)
        _connect(page)
        assert "Funding closed" in page.inner_text("#fund-hint")
        page.fill("#fund-amount", "1")
        page.click("#fund")
        assert re.fullmatch(
            rf"The contract refused: PostingClosed\(campaignId: {campaign.campaign_id}, "
            rf"nowTimestamp: \d+, postingDeadline: {info.posting_deadline}\)\.",
            _message(page, "error"))


def test_a_node_that_goes_down_is_a_clear_message(campaign, new_page, web_bundle):
    options = {"chain_rpc_url": campaign.node.rpc_url}
    with serve_api(campaign.run_dir, app_options=options) as node:
        page = new_page()
        _open(page, node.base_url, campaign)
        page.wait_for_function(
            "() => window.sponsorCharts && window.sponsorCharts.payments", timeout=15_000)
        assert page.locator("#chart-rounds").is_visible()
        node.stop()
        page.click("#connect")
        assert "is not answering (/web/config)" in _message(page, "error")
        assert page.locator("#rounds-table").is_visible()  # what the node rendered stays


def test_charts_whose_data_does_not_arrive_are_a_clear_message(campaign_api, campaign,
                                                               new_page):
    page = new_page()
    page.route("**/campaigns/*/report", lambda route: route.abort())  # the node drops it
    page.goto(campaign_api.base_url + "/sponsor")
    assert _message(page, "error").startswith(
        "The charts could not be drawn: The node at ")
    assert "The tables below are the node's data." in _message(page, "error")
    assert page.locator("#rounds-table tbody tr").count() == 2  # the node's tables stay


def test_sponsor_page_works_with_the_keyboard_at_375px(campaign_api, campaign, new_page,
                                                       doc_screenshot):
    page = new_page(PHONE)
    _open(page, campaign_api.base_url, campaign)
    page.focus("#connect")
    page.keyboard.press("Enter")
    page.wait_for_selector("#escrow dd[data-field='total-funded']", timeout=15_000)
    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.id")
    assert focused == "fund-amount", focused
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "fund"
    page.keyboard.press("Tab")  # the reclaim button is disabled: the next stop is the table
    assert page.evaluate("() => document.activeElement.tagName") == "SUMMARY"
    page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
    widths = page.evaluate("() => ({doc: document.documentElement.scrollWidth,"
                           " body: document.body.scrollWidth})")
    assert widths["doc"] <= PHONE["width"] and widths["body"] <= PHONE["width"], widths
    for canvas in ("#chart-rounds", "#chart-payments"):
        box = page.locator(canvas).bounding_box()
        assert box is not None and box["width"] > 200 and box["x"] + box["width"] <= PHONE["width"]
    doc_screenshot(page, "page_sponsor_375px")


def test_a_native_coin_campaign_is_funded_with_value_in_one_wallet_step(
        campaign, chain, new_page, tmp_path, web_bundle):
    from offchain.chain.pool import ZERO_ADDRESS, CampaignParams

    pool, _ = chain
    funder_key = campaign.node.private_keys[OUTSIDER]
    funder = Account.from_key(funder_key).address
    rpc_url = campaign.node.rpc_url
    amount = TOKEN // 4
    with chain_snapshot(rpc_url):
        now = int(anvil_rpc(rpc_url, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
        cid, _ = pool.create_campaign(funder_key, CampaignParams(
            token=ZERO_ADDRESS, guardian=funder, signers=(funder,), threshold=1, num_rounds=1,
            round_cap_wei=TOKEN, holder_cap_wei=TOKEN, challenge_window_s=60,
            claim_window_s=3600, posting_deadline=now + 86_400))
        run_dir = tmp_path / "native-run"  # a node whose deployment file names that campaign
        run_dir.mkdir()
        deployment = {**campaign.deployment, "campaign_id": cid, "token": ZERO_ADDRESS}
        (run_dir / "deployment.json").write_text(json.dumps(deployment))
        with serve_api(run_dir, app_options={"chain_rpc_url": rpc_url}) as node:
            page = new_page()
            bridge = _open(page, node.base_url, campaign, funder)
            assert "No rounds yet" in page.inner_text("main")
            _connect(page)
            assert "ETH" in page.inner_text("#fund-hint")
            assert "Two wallet steps" not in page.inner_text("#fund-hint")
            page.fill("#fund-amount", "0.25")
            page.click("#fund")
            assert _message(page, "success").startswith("Funded 0.25 ETH")
            steps = page.eval_on_selector_all("#fund-steps li", "items => items.map(i => i.innerText)")
            assert len(steps) == 1 and steps[0].startswith("Step 1 of 1: fund 0.25 ETH"), steps
        assert pool.get_campaign(cid).total_funded_wei == amount
        assert pool.funded_by(cid, funder) == amount
        sent = [p[0] for m, p in bridge.calls if m == "eth_sendTransaction"]
        assert len(sent) == 1 and int(sent[0]["value"], 16) == amount
