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
    """

    rpc_url: str
    chain_id: int
    account: str
    reject: set[str] = field(default_factory=set)
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def install(self, context) -> None:  # noqa: ANN001 (a Playwright BrowserContext)
        """Inject the provider into every page of ``context`` (call before its pages load)."""
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
                return {"result": None}
            message = f"Unrecognized chain ID {wanted}."
            return {"error": {"code": UNRECOGNIZED_CHAIN, "message": message}}
        if method == "eth_sendTransaction" and params and "from" not in params[0]:
            params = [{**params[0], "from": self.account}, *params[1:]]
        return self.rpc(method, params)

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
