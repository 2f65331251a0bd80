"""The holder page (``GET /holder``, offchain/api/web/holder.js) in a real Chromium against a
real anvil, the real API and a tiny real campaign: a demo holder's wallet (the injected
EIP-1193 bridge, signing with the holder's key) connects, sees its rounds with the allocation's
numbers, claims everything in one transaction (its token balance rises by exactly its leaves), a
second claim is refused with the decoded ``AlreadyClaimed``; a signed recipient authorisation
sent from another page pays the recipient exactly; a rejected signature, a rejected
transaction, a wrong network (and the Switch button), no wallet and a node that is down each
show a clear message; registration through the page stores the holder, and a refused one shows
the API's error; the page works with the keyboard and at 375 px."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
from eth_account import Account
from PIL import Image

from offchain.utils import read_json
from tests.browser.campaign import anvil_rpc, chain_snapshot
from tests.browser.eip1193 import Eip1193Bridge
from tests.browser.support import PHONE, serve_api

BALANCE_OF = "0x70a08231"
"""``balanceOf(address)``'s selector."""


def _balance(campaign, account: str) -> int:
    """``account``'s balance of the campaign's token (wei), read with ``eth_call``."""
    data = BALANCE_OF + account.lower().removeprefix("0x").rjust(64, "0")
    call = {"to": campaign.deployment["token"], "data": data}
    return int(anvil_rpc(campaign.node.rpc_url, "eth_call", [call, "latest"]), 16)


def _payments(campaign, address: str) -> list[tuple[int, int, int]]:
    """``(round, index, amount wei)`` of every positive payment of ``address``."""
    found = []
    for round_id, allocation in enumerate(campaign.allocations(), start=1):
        for h in allocation["holders"]:
            if h["address"] == address and int(h["amount_wei"]) > 0:
                found.append((round_id, int(h["index"]), int(h["amount_wei"])))
    return found


def _paid_holders(campaign) -> list[str]:
    """Demo holders paid in every round (most paid first)."""
    paid = [a for a in campaign.holder_keys if len(_payments(campaign, a)) == len(
        campaign.allocations())]
    assert len(paid) >= 2, "the tiny campaign should pay at least two holders in every round"
    return sorted(paid, key=lambda a: -sum(w for *_, w in _payments(campaign, a)))


def _dev_account(campaign, number: int) -> str:
    return Account.from_key(campaign.node.private_keys[number]).address


def _holder_bridge(campaign, address: str, **options) -> Eip1193Bridge:
    return Eip1193Bridge(campaign.node.rpc_url, campaign.node.chain_id, address,
                         private_key=campaign.holder_keys[address], **options)


def _open(new_page, api, bridge: Eip1193Bridge | None, viewport=None):  # noqa: ANN001, ANN202
    page = new_page(viewport) if viewport else new_page()
    if bridge is not None:
        bridge.install(page.context)
    page.goto(api.base_url + "/holder")
    page.wait_for_selector("body[data-ready='true']")
    return page


def _connect(page) -> None:  # noqa: ANN001 (a Playwright Page)
    page.click("#connect")
    page.wait_for_selector("table.holder-rounds tbody tr")


def _connect_newcomer(page) -> None:  # noqa: ANN001
    """Connect an account that took part in no round; wait until the page says so (the page's
    own placeholder before connecting is also a ``.empty`` paragraph)."""
    page.click("#connect")
    page.wait_for_selector("#campaigns .empty:has-text('took part in no round')")


def _message(page, kind: str = "error") -> str:  # noqa: ANN001
    # Generous: a claim is a simulation, a transaction, a receipt and a re-read, on shared cores.
    return page.wait_for_selector(f"#messages .message-{kind}", timeout=20_000).inner_text()


def _click(page, selector: str) -> None:  # noqa: ANN001
    """Empty the messages region, then click ``selector`` (so :func:`_message` waits for the
    answer to this click, not an earlier one)."""
    page.evaluate("() => document.getElementById('messages').replaceChildren()")
    page.click(selector)


def _rows(page) -> list[list[str]]:  # noqa: ANN001
    return page.eval_on_selector_all(
        "table.holder-rounds tbody tr",
        "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")


def test_holder_connects_sees_its_rounds_and_claims_all_exactly(
        campaign_api, campaign, new_page, doc_screenshot):
    holder = _paid_holders(campaign)[0]
    payments = _payments(campaign, holder)
    page = _open(new_page, campaign_api, _holder_bridge(campaign, holder))
    _connect(page)
    assert holder in page.inner_text("#account")
    contributions = [read_json(campaign.run_dir / f"round_{r:03d}" / "contributions.json")
                     ["normalized"] for r, *_ in payments]
    rows = _rows(page)
    assert [int(r[0]) for r in rows] == [r for r, *_ in payments]
    for row, (_, index, _), shares in zip(rows, payments, contributions, strict=True):
        assert row[2] == f"{100 * shares[index]:.2f} %"
        assert row[5] == "unclaimed"
    titles = page.eval_on_selector_all("table.holder-rounds tbody td[title$=' wei']",
                                       "cells => cells.map(c => c.title)")
    assert titles == [f"{w} wei" for *_, w in payments]  # exact wei on hover
    total = sum(w for *_, w in payments)
    button = page.locator("button.claim-all")
    assert button.inner_text().startswith(f"Claim all {len(payments)} unclaimed payments")
    doc_screenshot(page, "page_holder")

    with chain_snapshot(campaign.node.rpc_url):
        # A second page of the same holder, loaded before the claim: its button is stale.
        stale = _open(new_page, campaign_api, _holder_bridge(campaign, holder))
        _connect(stale)
        before = _balance(campaign, holder)
        button.click()
        assert f"Claimed {len(payments)} payment(s)" in _message(page, "success")
        assert _balance(campaign, holder) - before == total
        assert [r[5] for r in _rows(page)] == ["claimed"] * len(payments)
        assert page.locator("button.claim-all").count() == 0
        # Sending the same leaves again is refused by the contract, decoded by name and args.
        stale.click("button.claim-all")
        first_round, first_index, _ = payments[0]
        assert _message(stale) == (
            f"The contract refused: AlreadyClaimed(campaignId: {campaign.campaign_id}, "
            f"roundId: {first_round}, index: {first_index}).")
        assert _balance(campaign, holder) - before == total


def test_recipient_authorisation_signed_by_holder_pays_the_recipient(
        campaign_api, campaign, new_page):
    holder = _paid_holders(campaign)[1]
    total = sum(w for *_, w in _payments(campaign, holder))
    recipient = _dev_account(campaign, 7)
    with chain_snapshot(campaign.node.rpc_url):
        signer = _open(new_page, campaign_api, _holder_bridge(campaign, holder))
        _connect(signer)
        signer.fill("#recipient", recipient.lower())
        signer.click("#sign-recipient")
        assert "Signed" in _message(signer, "success")
        authorisation = json.loads(signer.input_value("#authorisation"))
        assert (authorisation["account"], authorisation["recipient"]) == (holder, recipient)
        assert sum(int(leaf["amount_wei"]) for leaf in authorisation["leaves"]) == total

        bridge = Eip1193Bridge(campaign.node.rpc_url, campaign.node.chain_id, recipient)
        relay = _open(new_page, campaign_api, bridge)
        _connect_newcomer(relay)
        holder_before, before = _balance(campaign, holder), _balance(campaign, recipient)
        relay.fill("#authorisation-input", json.dumps(authorisation))
        relay.click("#submit-authorisation")
        assert f"to {recipient}" in _message(relay, "success")
        assert _balance(campaign, recipient) - before == total
        assert _balance(campaign, holder) == holder_before
        # The holder's page, reloaded, shows the payments claimed.
        signer.click("#connect")
        signer.wait_for_selector("p.all-claimed")
        assert {r[5] for r in _rows(signer)} == {"claimed"}
        # The same authorisation again: its nonce is used up (decoded revert).
        _click(relay, "#submit-authorisation")
        assert _message(relay) == (
            f"The contract refused: InvalidRecipientAuthorization(account: {holder}, "
            f"recipient: {recipient}, nonce: {int(authorisation['nonce']) + 1}).")


def test_rejected_signature_and_transaction_show_their_messages(
        campaign_api, campaign, new_page):
    holder = _paid_holders(campaign)[0]
    bridge = _holder_bridge(campaign, holder, reject={"eth_signTypedData_v4",
                                                      "eth_sendTransaction"})
    page = _open(new_page, campaign_api, bridge)
    _connect(page)
    page.fill("#recipient", _dev_account(campaign, 7))
    page.click("#sign-recipient")
    rejected = "You rejected the request in your wallet: nothing was signed or sent."
    assert _message(page) == rejected
    assert page.is_hidden("#authorisation-output")
    with chain_snapshot(campaign.node.rpc_url):
        before = _balance(campaign, holder)
        _click(page, "button.claim-all")
        assert _message(page) == rejected
        assert _balance(campaign, holder) == before
    assert page.is_enabled("button.claim-all")  # the button is usable again


def test_wrong_network_is_explained_and_the_switch_button_fixes_it(
        campaign_api, campaign, new_page):
    holder = _paid_holders(campaign)[0]
    page = _open(new_page, campaign_api, _holder_bridge(campaign, holder, wallet_chain_id=1))
    page.click("#connect")
    text = _message(page)
    assert text.startswith("Wrong network: your wallet is on chain 1, but this campaign is on "
                           f"chain {campaign.node.chain_id}.")
    assert page.is_visible("#switch-network")
    page.click("#switch-network")
    assert "on the campaign's network" in _message(page, "success")
    page.wait_for_selector("table.holder-rounds tbody tr")
    assert page.is_hidden("#switch-network")


def test_no_wallet_and_node_down_show_messages(campaign, web_bundle, new_page):
    with serve_api(campaign.run_dir) as node:
        page = _open(new_page, node, None)
        page.click("#connect")
        assert _message(page).startswith("No wallet found in this browser.")
        holder = _paid_holders(campaign)[0]
        other = _open(new_page, node, _holder_bridge(campaign, holder))
        node.stop()
        other.click("#connect")
        assert "is not answering" in _message(other)
        assert other.is_enabled("#connect")


def _png(seed: int, side: int = 16) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def _files(images: list[tuple[str, bytes]]) -> list[dict]:
    return [{"name": n, "mimeType": "image/png", "buffer": b} for n, b in images]


def listed_after(api) -> list[dict]:  # noqa: ANN001
    return httpx.get(api.base_url + "/holders", timeout=5).json()


def test_registration_through_the_page_is_stored_and_a_refusal_shows_the_api_error(
        campaign_api, campaign, new_page):
    account = _dev_account(campaign, 8)  # anvil signs personal_sign for its dev accounts
    bridge = Eip1193Bridge(campaign.node.rpc_url, campaign.node.chain_id, account)
    page = _open(new_page, campaign_api, bridge)
    _connect_newcomer(page)
    page.fill("#reg-name", "page-artist")
    page.set_input_files("#reg-images", _files([("a.png", _png(1)), ("b.png", _png(2))]))
    page.fill("#reg-caption-0", "  a red circle  ")
    page.fill("#reg-caption-1", "Cafe\u0301 at night")  # NFC-normalised before signing
    page.fill("#reg-price", "1.5")
    page.click("#register")
    assert _message(page, "success").startswith("Registered “page-artist”: 2 image(s)")
    listed = httpx.get(campaign_api.base_url + "/holders", timeout=5).json()
    assert {"address": account, "name": "page-artist", "n_images": 2} in listed
    stored = read_json(campaign.holders_dir / "page-artist" / "holder.json")
    assert stored["reservation_price_wei"] == str(15 * 10**17)
    captions = set(read_json(campaign.holders_dir / "page-artist" / "captions.json").values())
    assert captions == {"a red circle", "Caf\u00e9 at night"}

    # A second registration of the same address without "replace": the API's 409 as it came.
    page.fill("#reg-name", "page-artist-2")
    page.set_input_files("#reg-images", _files([("c.png", _png(3))]))
    _click(page, "#register")
    assert "(HTTP 409)" in _message(page) and "ask to replace it" in _message(page)
    # Asking to replace it: the signed message says "replace: true", and the API takes it.
    page.check("#reg-replace")
    _click(page, "#register")
    assert _message(page, "success").startswith("Registered “page-artist-2”: 1 image(s)")
    # Over the node's size limit: the page says so before anything is signed or sent.
    page.uncheck("#reg-replace")
    page.fill("#reg-name", "too-big")
    page.set_input_files("#reg-images", _files([("big.png", b"\x89PNG" + bytes(3 * 2**20))]))
    signatures = [m for m, _ in bridge.calls].count("personal_sign")
    _click(page, "#register")
    assert _message(page).startswith("Image \"big.png\" is 3145732 bytes, over this node's limit")
    assert [m for m, _ in bridge.calls].count("personal_sign") == signatures
    # Not an image: the API's 422.
    other = _dev_account(campaign, 9)
    bad = _open(new_page, campaign_api,
                Eip1193Bridge(campaign.node.rpc_url, campaign.node.chain_id, other))
    _connect_newcomer(bad)
    bad.fill("#reg-name", "not-images")
    bad.set_input_files("#reg-images", _files([("x.png", b"this is not a png file")]))
    bad.click("#register")
    refusal = _message(bad)
    assert refusal.startswith("The node refused /holders:") and "(HTTP 422)" in refusal
    names = {h["name"] for h in httpx.get(campaign_api.base_url + "/holders", timeout=5).json()}
    assert "not-images" not in names and "too-big" not in names
    assert {h["name"] for h in listed_after(campaign_api) if h["address"] == account} == {
        "page-artist-2"}  # replaced


def test_rejected_registration_signature_sends_nothing(campaign_api, campaign, new_page):
    account = _dev_account(campaign, 6)
    bridge = Eip1193Bridge(campaign.node.rpc_url, campaign.node.chain_id, account,
                           reject={"personal_sign"})
    page = _open(new_page, campaign_api, bridge)
    _connect_newcomer(page)
    page.fill("#reg-name", "says-no")
    page.set_input_files("#reg-images", _files([("a.png", _png(4))]))
    page.click("#register")
    assert _message(page) == "You rejected the request in your wallet: nothing was signed or sent."
    names = {h["name"] for h in httpx.get(campaign_api.base_url + "/holders", timeout=5).json()}
    assert "says-no" not in names


def test_keyboard_connect_and_claim_button_at_375px(campaign_api, campaign, new_page,
                                                    doc_screenshot):
    holder = _paid_holders(campaign)[0]
    page = _open(new_page, campaign_api, _holder_bridge(campaign, holder), PHONE)
    for _ in range(10):  # skip link, the nav's four links, then the Connect button
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "connect":
            break
    assert page.evaluate("() => document.activeElement.id") == "connect"
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # the focus is visible
    page.keyboard.press("Enter")
    page.wait_for_selector("table.holder-rounds tbody tr")
    for _ in range(10):  # on to the claim button
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.className") == "claim-all":
            break
    assert page.evaluate("() => document.activeElement.className") == "claim-all"
    widths = page.evaluate(
        "() => ({doc: document.documentElement.scrollWidth, body: document.body.scrollWidth})")
    assert widths["doc"] <= PHONE["width"] and widths["body"] <= PHONE["width"], widths
    boxes = page.eval_on_selector_all(
        "main section, main button, main input, main textarea",
        "els => els.map(e => e.getBoundingClientRect().right)")
    assert max(boxes) <= PHONE["width"], boxes
    # Each round's payment is on screen, not behind a sideways scroll.
    payments = page.eval_on_selector_all(
        "table.holder-rounds td[title$=' wei']", "cells => cells.map(c => c.getBoundingClientRect().right)")
    assert payments and max(payments) <= PHONE["width"], payments
    doc_screenshot(page, "page_holder_375px")


@pytest.mark.parametrize("address", ["0xnothex", "0x" + "AB" * 5 + "ab" * 15, "0x" + "1" * 200])
def test_lookup_without_a_wallet_shows_a_bad_address(campaign_api, new_page, address):
    page = new_page()
    page.goto(campaign_api.base_url + "/holder?address=" + address)
    assert page.locator(".holder-lookup .message-error").count() == 1
