"""An EIP-1193 provider injected into a page, forwarding its requests to anvil.

The page's own wallet code (viem's ``custom(window.ethereum)`` transport, or plain
``window.ethereum.request``) runs unchanged; each request crosses to Python through a Playwright
binding and goes to anvil's JSON-RPC, where the dev accounts are unlocked and sign
(``eth_sendTransaction``, ``personal_sign``, ``eth_signTypedData_v4``). The bridge plays the
wallet's part:

* ``eth_requestAccounts`` / ``eth_accounts`` answer the one connected ``account``;
  ``eth_sendTransaction`` without ``from`` is sent from it;
* ``wallet_switchEthereumChain`` succeeds for anvil's chain id and fails with 4902 otherwise;
* a method in ``reject`` fails with 4001 "User rejected the request." (a user saying no);
* anything else is anvil's answer, its errors included (a revert's ``data`` stays intact).

An account that is not one of anvil's dev accounts (e.g. a demo holder) is given with its
``private_key``: the bridge then signs ``personal_sign`` and ``eth_signTypedData_v4`` itself
(eth_account, as a wallet would) and anvil sends its transactions as an impersonated account
(``anvil_impersonateAccount``, called by :meth:`Eip1193Bridge.install`).

``calls`` records every ``(method, params)`` the page sent, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["INIT_SCRIPT", "USER_REJECTED", "Eip1193Bridge"]

USER_REJECTED = 4001
"""EIP-1193 error code of a request the user rejected."""
UNRECOGNIZED_CHAIN = 4902
"""Error code wallets answer ``wallet_switchEthereumChain`` with for an unknown chain."""

INIT_SCRIPT = """
(() => {
  class ProviderRpcError extends Error {
    constructor(code, message, data) { super(message); this.code = code; this.data = data; }
  }
  const listeners = {};
  window.ethereum = {
    isTestBridge: true,
    async request({ method, params }) {
      const answer = await window.__eip1193Forward(method, params === undefined ? [] : params);
      if (answer.error) {
        throw new ProviderRpcError(answer.error.code, answer.error.message, answer.error.data);
      }
      return answer.result;
    },
    on(event, listener) { (listeners[event] ||= []).push(listener); return this; },
    removeListener(event, listener) {
      listeners[event] = (listeners[event] || []).filter((l) => l !== listener);
      return this;
    },
    __emit(event, value) { (listeners[event] || []).forEach((l) => l(value)); },
  };
  window.dispatchEvent(new Event("ethereum#initialized"));
})();
"""
"""Defines ``window.ethereum`` before any page script runs (``BrowserContext.add_init_script``)."""


@dataclass
class Eip1193Bridge:
    """The wallet side of an injected provider: see the module docstring.

    Args:
        rpc_url: anvil's JSON-RPC URL (``AnvilNode.rpc_url``).
        chain_id: anvil's chain id.
        account: the connected address (one of anvil's dev accounts, which anvil signs for).
        private_key: the account's key when it is not an anvil dev account (see the module
            docstring); None: anvil signs.
        wallet_chain_id: the chain the wallet is on when it is not anvil's (a wrong-network
            test): ``eth_chainId`` answers it until the page switches to ``chain_id``
            (``wallet_switchEthereumChain``); None: anvil's chain.
    """

    rpc_url: str
    chain_id: int
    account: str
    private_key: str | None = None
    reject: set[str] = field(default_factory=set)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    wallet_chain_id: int | None = None

    def install(self, context) -> None:  # noqa: ANN001 (a Playwright BrowserContext)
        """Inject the provider into every page of ``context`` (call before its pages load)."""
        if self.private_key is not None:
            self.rpc("anvil_impersonateAccount", [self.account])
        context.expose_function("__eip1193Forward", self.handle)
        context.add_init_script(INIT_SCRIPT)

    def emit(self, page, event: str, value: Any) -> None:  # noqa: ANN001 (a Playwright Page)
        """Fire a provider event in ``page`` (e.g. ``"accountsChanged"``, ``["0x…"]``)."""
        page.evaluate("([event, value]) => window.ethereum.__emit(event, value)", [event, value])

    def handle(self, method: str, params: Any) -> dict[str, Any]:
        """Answer one request: ``{"result": ...}`` or ``{"error": {code, message, data?}}``."""
        self.calls.append((method, params))
        if method in self.reject:
            return {"error": {"code": USER_REJECTED, "message": "User rejected the request."}}
        if method in ("eth_requestAccounts", "eth_accounts"):
            return {"result": [self.account]}
        if method == "wallet_switchEthereumChain":
            wanted = int(params[0]["chainId"], 16)
            if wanted == self.chain_id:
                self.wallet_chain_id = None
                return {"result": None}
            message = f"Unrecognized chain ID {wanted}."
            return {"error": {"code": UNRECOGNIZED_CHAIN, "message": message}}
        if method == "eth_chainId" and self.wallet_chain_id is not None:
            return {"result": hex(self.wallet_chain_id)}
        if self.private_key is not None and method in ("personal_sign", "eth_signTypedData_v4"):
            return {"result": self._sign(method, params)}
        if method == "eth_sendTransaction" and params and "from" not in params[0]:
            params = [{**params[0], "from": self.account}, *params[1:]]
        return self.rpc(method, params)

    def _sign(self, method: str, params: Any) -> str:
        """``personal_sign`` (EIP-191; params ``[message hex, address]``) or
        ``eth_signTypedData_v4`` (EIP-712; params ``[address, typed data JSON]``) with
        ``private_key``: the 0x-hex 65-byte signature."""
        import json

        from eth_account import Account
        from eth_account.messages import encode_defunct, encode_typed_data

        if method == "personal_sign":
            message = encode_defunct(hexstr=params[0])
        else:
            data = params[1] if isinstance(params[1], dict) else json.loads(params[1])
            message = encode_typed_data(full_message=data)
        signed = Account.sign_message(message, private_key=self.private_key)
        return "0x" + signed.signature.hex().removeprefix("0x")

    def rpc(self, method: str, params: Any) -> dict[str, Any]:
        """One JSON-RPC call to anvil; its ``result`` or ``error`` object as it answered.

        Raises:
            httpx.HTTPError: anvil did not answer (the page sees the test fail, not a hang).
        """
        body = {"jsonrpc": "2.0", "id": len(self.calls), "method": method, "params": params}
        answer = httpx.post(self.rpc_url, json=body, timeout=10.0).json()
        if "error" in answer:
            return {"error": answer["error"]}
        return {"result": answer.get("result")}
