"""The injected EIP-1193 provider (tests/browser/eip1193.py) in a real Chromium against a real
anvil: a page's ``window.ethereum`` connects, sends a transaction that anvil's dev account signs
(the recipient's balance rises by exactly its value), signs a message and EIP-712 typed data
that recover to the account, a reverting call's error data reaches the page intact, and a
rejected request fails with EIP-1193's 4001 as a wallet's would."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data

from offchain.chain.anvil import AnvilNode
from tests.browser.eip1193 import USER_REJECTED, Eip1193Bridge

ETHER = 10**18
REVERTER_INIT = "0x600d600c600039600d6000f3" + "63aabbccdd6000526004601cfd"
"""Creation code of a contract whose every call reverts with the 4 bytes 0xaabbccdd (a custom
error's selector): 12 bytes that return the 13-byte runtime after them."""


@pytest.fixture
def anvil_node() -> Iterator[AnvilNode]:
    """A fresh anvil with 2 funded dev accounts (stopped after the test)."""
    with AnvilNode(accounts=2) as node:
        yield node


def _balance(rpc_url: str, address: str) -> int:
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [address, "latest"]}
    return int(httpx.post(rpc_url, json=body, timeout=5).json()["result"], 16)


def _receipt(page, tx_hash: str, timeout_s: float = 10.0) -> dict:  # noqa: ANN001 (a Page)
    """The transaction's receipt asked through the page's provider, polled until it is mined
    (a node mining on an interval has none right after ``eth_sendTransaction``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        receipt = page.evaluate(
            "h => window.ethereum.request({method: 'eth_getTransactionReceipt', params: [h]})",
            tx_hash)
        if receipt is not None or time.monotonic() > deadline:
            assert receipt is not None, f"no receipt for {tx_hash} after {timeout_s} s"
            return receipt
        time.sleep(0.1)


def test_page_wallet_calls_go_to_anvil_and_its_dev_account_signs(api, new_page, anvil_node):
    sender, recipient = (Account.from_key(k).address for k in anvil_node.private_keys)
    bridge = Eip1193Bridge(anvil_node.rpc_url, anvil_node.chain_id, sender)
    page = new_page()
    bridge.install(page.context)
    page.goto(api.base_url + "/")

    assert page.evaluate("() => window.ethereum.request({method: 'eth_requestAccounts'})") == [
        sender]
    assert int(page.evaluate("() => window.ethereum.request({method: 'eth_chainId'})"), 16) == (
        anvil_node.chain_id)

    before = _balance(anvil_node.rpc_url, recipient)
    tx_hash = page.evaluate(
        "to => window.ethereum.request({method: 'eth_sendTransaction',"
        " params: [{to, value: '0xde0b6b3a7640000'}]})", recipient)  # 1 ether, from the account
    receipt = _receipt(page, tx_hash)
    assert receipt["status"] == "0x1"
    assert _balance(anvil_node.rpc_url, recipient) - before == ETHER

    message = "register my works"
    signature = page.evaluate(
        "([m, a]) => window.ethereum.request({method: 'personal_sign',"
        " params: ['0x' + [...new TextEncoder().encode(m)].map(b => b.toString(16)"
        ".padStart(2, '0')).join(''), a]})", [message, sender])
    assert Account.recover_message(encode_defunct(text=message), signature=signature) == sender

    typed = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}],
            "Recipient": [{"name": "holder", "type": "address"}, {"name": "to", "type": "address"}],
        },
        "primaryType": "Recipient",
        "domain": {"name": "test", "chainId": anvil_node.chain_id},
        "message": {"holder": sender, "to": recipient},
    }
    typed_signature = page.evaluate(
        "([a, t]) => window.ethereum.request({method: 'eth_signTypedData_v4',"
        " params: [a, JSON.stringify(t)]})", [sender, typed])
    signed = encode_typed_data(full_message=typed)
    assert Account.recover_message(signed, signature=typed_signature) == sender

    bridge.reject.add("personal_sign")
    refused = page.evaluate(
        "a => window.ethereum.request({method: 'personal_sign', params: ['0x00', a]})"
        ".then(() => null, e => ({code: e.code, message: e.message}))", sender)
    assert refused == {"code": USER_REJECTED, "message": "User rejected the request."}
    switch = page.evaluate(
        "() => window.ethereum.request({method: 'wallet_switchEthereumChain',"
        " params: [{chainId: '0x1'}]}).then(() => null, e => e.code)")
    assert switch == 4902
    # A revert reaches the page with its data intact (what decoding a custom error needs): the
    # simulation (eth_call, as viem's simulateContract) fails with the data; a transaction sent
    # anyway is mined and its receipt says it reverted (anvil does not refuse to send it).
    deploy = bridge.rpc("eth_sendTransaction", [{"from": sender, "data": REVERTER_INIT}])["result"]
    reverter = bridge.rpc("eth_getTransactionReceipt", [deploy])["result"]["contractAddress"]
    simulated = page.evaluate(
        "to => window.ethereum.request({method: 'eth_call', params: [{to, data: '0x'}, 'latest']})"
        ".then(() => null, e => ({code: e.code, data: e.data}))", reverter)
    assert simulated == {"code": 3, "data": "0xaabbccdd"}
    sent = _receipt(page, page.evaluate(
        "to => window.ethereum.request({method: 'eth_sendTransaction', params: [{to, data: '0x'}]})",
        reverter))
    assert sent["status"] == "0x0"
    assert [m for m, _ in bridge.calls][:3] == [
        "eth_requestAccounts", "eth_chainId", "eth_sendTransaction"]
