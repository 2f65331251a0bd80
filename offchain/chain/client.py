"""Typed web3 clients for the compensation contracts (the only web3 user with ``errors.py``).

:class:`ChainClient` talks JSON-RPC over plain HTTP, signs transactions locally with
eth-account, waits for every receipt, and turns reverts into typed errors: custom Solidity
errors from every ABI it has seen (``error InvalidSigner(address recovered, address expected)``)
become :class:`~offchain.chain.errors.ContractRevert` with ``.name`` and decoded ``.args``.
:class:`TokenClient` wraps ERC-20 tokens; :class:`offchain.chain.pool.PoolClient` wraps
``CompensationPool``.

Units: token and ether amounts are integers in wei (the token's smallest unit); times are Unix
seconds. Keys are ``0x``-hex private keys and are never logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_account import Account
from eth_utils import (
    get_abi_input_names,
    get_abi_input_types,
    keccak,
    to_bytes,
    to_checksum_address,
)
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import (
    ContractLogicError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)
from web3.types import TxReceipt

from offchain.chain.compiler import CompiledContract
from offchain.chain.errors import ChainError, ContractRevert, TransactionFailed
from offchain.chain.rpc import RetryingHTTPProvider, RetryPolicy, is_transient_error

__all__ = [
    "ChainClient",
    "TokenClient",
    "address_of",
]

log = logging.getLogger(__name__)

BroadcastHook = Callable[[str, int], None]
"""Called with ``(tx_hash, nonce)`` of a signed transaction (see :meth:`ChainClient.send`)."""

_ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
_PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)


def address_of(private_key: str | bytes) -> str:
    """Checksummed address of a private key."""
    return Account.from_key(private_key).address


@dataclass(frozen=True)
class _ErrorAbi:
    contract: str | None
    name: str
    types: tuple[str, ...]
    names: tuple[str, ...]


class ChainClient:
    """A JSON-RPC connection that deploys contracts and sends signed transactions.

    Every request is retried on transient faults (connection drops, timeouts, HTTP 429/5xx)
    with exponential backoff and jitter (:class:`~offchain.chain.rpc.RetryPolicy`); reverts and
    validation errors are never retried. Sends are idempotent: see :meth:`send`.

    Args:
        rpc_url: The node's HTTP endpoint (``http://127.0.0.1:8545``).
        timeout: Seconds to wait for one request, and for a transaction's receipt and
            confirmations.
        retry: Retry policy for transient faults (default :class:`RetryPolicy()`).
        confirmations: Blocks that must include or follow a transaction's block before
            :meth:`send` returns (1: the receipt's block is enough). On an automining dev chain
            (anvil's default) no block comes without a transaction, so keep 1 there.
        gas_margin: Factor applied to the node's gas estimate.

    Raises:
        ChainError: the node does not answer.
    """

    def __init__(
        self,
        rpc_url: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        confirmations: int = 1,
        gas_margin: float = 1.2,
    ) -> None:
        if confirmations < 1:
            raise ChainError(f"confirmations must be at least 1, got {confirmations}")
        if gas_margin < 1.0:
            raise ChainError(f"gas_margin must be at least 1.0, got {gas_margin}")
        self.rpc_url = rpc_url
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.confirmations = confirmations
        self.gas_margin = gas_margin
        self.w3 = Web3(
            RetryingHTTPProvider(rpc_url, policy=self.retry, request_kwargs={"timeout": timeout})
        )
        self._errors: dict[bytes, _ErrorAbi] = {}
        self._nonces: dict[str, int] = {}  # sender → next nonce this client will use
        self._nonce_lock = threading.Lock()
        with self._translate():
            self.chain_id: int = self.w3.eth.chain_id

    # -- ABIs and error decoding -------------------------------------------------------------

    def register_abi(self, abi: Sequence[dict[str, Any]], contract: str | None = None) -> None:
        """Learn the custom errors declared in ``abi`` so reverts carrying them are decoded.

        Contracts deployed or wrapped through this client are registered automatically.
        """
        for entry in abi:
            if entry.get("type") != "error":
                continue
            types = tuple(get_abi_input_types(entry))
            selector = keccak(text=f"{entry['name']}({','.join(types)})")[:4]
            # The first contract to declare an error names it (library errors repeat).
            self._errors.setdefault(
                selector,
                _ErrorAbi(contract, entry["name"], types, tuple(get_abi_input_names(entry))),
            )

    def decode_revert(self, data: str | bytes | None, tx_hash: str | None = None) -> ChainError:
        """Turn revert data into the error to raise (does not raise it).

        Returns:
            :class:`ContractRevert` for a known custom error, ``Error(string)`` or
            ``Panic(uint256)``; a plain :class:`ChainError` for empty data or an unknown selector.
        """
        raw = _revert_bytes(data)
        hex_data = "0x" + raw.hex()
        if len(raw) < 4:
            return TransactionFailed(f"reverted without a reason (data={hex_data})", tx_hash)
        selector, payload = raw[:4], raw[4:]
        if selector == _ERROR_STRING_SELECTOR:
            spec = _ErrorAbi(None, "Error", ("string",), ("reason",))
        elif selector == _PANIC_SELECTOR:
            spec = _ErrorAbi(None, "Panic", ("uint256",), ("code",))
        elif selector in self._errors:
            spec = self._errors[selector]
        else:
            return TransactionFailed(
                f"reverted with unknown error selector 0x{selector.hex()} (data={hex_data})",
                tx_hash,
            )
        try:
            values = abi_decode(list(spec.types), payload)
        except (DecodingError, ValueError) as exc:
            return TransactionFailed(
                f"reverted {spec.name} with undecodable arguments (data={hex_data}): {exc}", tx_hash
            )
        args = tuple(_normalise(t, v) for t, v in zip(spec.types, values, strict=True))
        return ContractRevert(
            contract=spec.contract,
            name=spec.name,
            args=args,
            arg_names=spec.names,
            data=hex_data,
            tx_hash=tx_hash,
        )

    @contextmanager
    def _translate(self, tx_hash: str | None = None) -> Iterator[None]:
        """Map web3/requests failures to :class:`ChainError` subclasses."""
        try:
            yield
        except ContractLogicError as exc:
            raise self.decode_revert(exc.data, tx_hash) from exc
        except TimeExhausted as exc:
            raise ChainError(f"no receipt for {tx_hash} within {self.timeout:g} s") from exc
        except requests.exceptions.RequestException as exc:
            raise ChainError(f"node at {self.rpc_url} not reachable: {exc}") from exc
        except Web3Exception as exc:
            raise ChainError(f"RPC to {self.rpc_url} failed: {exc}") from exc

    # -- contracts ---------------------------------------------------------------------------

    def contract(self, address: str, abi: Sequence[dict[str, Any]], name: str | None = None):
        """A web3 contract object at ``address`` (registers its errors)."""
        self.register_abi(abi, name)
        return self.w3.eth.contract(address=to_checksum_address(address), abi=list(abi))

    def deploy(self, compiled: CompiledContract, *args: Any, sender_key: str) -> str:
        """Deploy ``compiled`` with constructor ``args``; returns the checksummed address.

        Raises:
            ContractRevert: the constructor reverted with a known error.
            ChainError: any other failure.
        """
        if compiled.bytecode in ("", "0x"):
            raise ChainError(f"{compiled.name} has no bytecode (abstract contract or interface?)")
        self.register_abi(compiled.abi, compiled.name)
        factory = self.w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        receipt = self.send(factory.constructor(*args), sender_key)
        address = receipt["contractAddress"]
        if not address:
            raise ChainError(f"deploying {compiled.name} produced no contract address")
        log.info("deployed %s at %s", compiled.name, address)
        return to_checksum_address(address)

    def send(
        self,
        fn: Any,
        sender_key: str,
        *,
        value_wei: int = 0,
        before_broadcast: BroadcastHook | None = None,
        after_broadcast: BroadcastHook | None = None,
    ) -> TxReceipt:
        """Sign and send ``fn`` (a bound contract function or constructor), wait for the receipt.

        Gas is estimated first (times ``gas_margin``), so most reverts surface here, before
        anything is mined. The nonce is the larger of the node's pending count and the next
        one this client handed out for the sender. The transaction is signed once; a send whose
        answer is lost is checked by hash and re-sent as the same bytes (see
        :meth:`_broadcast`), so one call never produces two transactions.

        ``before_broadcast(tx_hash, nonce)`` runs once the transaction is signed, before any
        byte reaches the node (a caller records the hash durably there: if it raises, nothing
        is sent); ``after_broadcast(tx_hash, nonce)`` once the node has it, before the receipt.

        Returns:
            The receipt (``status == 1``), after ``confirmations`` blocks.

        Raises:
            ContractRevert: the call reverts with a decodable error (at estimation or mined).
            TransactionFailed: the mined transaction has ``status == 0`` with no decodable reason.
            ChainError: node unreachable after retries, nonce taken by another transaction,
                receipt timeout.
        """
        sender = address_of(sender_key)
        with self._translate():
            gas = fn.estimate_gas({"from": sender, "value": value_wei})
            tx = fn.build_transaction(
                {
                    "from": sender,
                    "value": value_wei,
                    "gas": self._with_margin(gas),
                    "nonce": self._next_nonce(sender),
                    "chainId": self.chain_id,
                }
            )
        return self._sign_and_wait(tx, sender_key, before_broadcast, after_broadcast)

    def send_eth(self, sender_key: str, to: str, amount_wei: int) -> TxReceipt:
        """Transfer ``amount_wei`` of ether to ``to`` (same guarantees as :meth:`send`)."""
        sender = address_of(sender_key)
        with self._translate():
            tx: dict[str, Any] = {
                "from": sender,
                "to": to_checksum_address(to),
                "value": amount_wei,
                "chainId": self.chain_id,
            }
            tx["gas"] = self._with_margin(self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
            block = self.w3.eth.get_block("latest")
            base_fee = block.get("baseFeePerGas", 0)
            tx["maxPriorityFeePerGas"] = self.w3.eth.max_priority_fee
            tx["maxFeePerGas"] = 2 * base_fee + tx["maxPriorityFeePerGas"]
            tx["nonce"] = self._next_nonce(sender)
        return self._sign_and_wait(tx, sender_key)

    def _with_margin(self, gas: int) -> int:
        return int(gas * self.gas_margin)

    def _next_nonce(self, sender: str) -> int:
        """Reserve the sender's next nonce: max(node's pending count, our next)."""
        pending = int(self.w3.eth.get_transaction_count(sender, "pending"))  # type: ignore[arg-type]
        with self._nonce_lock:
            nonce = max(pending, self._nonces.get(sender, 0))
            self._nonces[sender] = nonce + 1
            return nonce

    def _forget_nonce(self, sender: str) -> None:
        """Drop the cached nonce so the next send re-syncs from the node."""
        with self._nonce_lock:
            self._nonces.pop(sender, None)

    def _sign_and_wait(
        self,
        tx: dict[str, Any],
        sender_key: str,
        before_broadcast: BroadcastHook | None = None,
        after_broadcast: BroadcastHook | None = None,
    ) -> TxReceipt:
        signed = Account.sign_transaction(tx, sender_key)
        hex_hash = "0x" + bytes(signed.hash).hex()
        try:
            if before_broadcast is not None:
                before_broadcast(hex_hash, int(tx["nonce"]))
            self._broadcast(signed.raw_transaction, hex_hash)
        except Exception:
            self._forget_nonce(tx["from"])
            raise
        if after_broadcast is not None:
            after_broadcast(hex_hash, int(tx["nonce"]))
        receipt = self._wait_confirmed(hex_hash)
        if receipt["status"] != 1:
            raise self._explain_failure(tx, receipt, hex_hash)
        return receipt

    def _broadcast(self, raw: bytes, tx_hash: str) -> None:
        """Send signed bytes until the node has them, never anything else.

        ``tx_hash`` is computed locally from ``raw``. When a send fails ambiguously (dropped
        connection, timeout, 5xx: the node may have accepted it) the hash is looked up; only if
        the node does not know it are the same bytes sent again. Sending the same bytes twice is
        harmless: the node answers "already known" or "nonce too low", and the lookup by hash
        tells acceptance apart from a nonce taken by another transaction.
        """
        policy = self.retry
        started = time.monotonic()
        for attempt in range(policy.attempts):
            try:
                with self._translate(tx_hash):
                    try:
                        self.w3.eth.send_raw_transaction(raw)
                    except Web3RPCError as exc:
                        if _is_duplicate_send(exc) and self._is_known(tx_hash):
                            log.info("send of %s: the node has it already (%s)", tx_hash, exc)
                            return
                        raise
                return
            except ChainError as exc:
                cause = exc.__cause__
                if cause is None or not is_transient_error(cause):
                    raise
                if self._is_known(tx_hash):
                    log.info("send of %s lost its answer but the node has it", tx_hash)
                    return
                if not policy.backoff(attempt, started, f"send {tx_hash}", cause):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _is_known(self, tx_hash: str) -> bool:
        """Whether the node knows transaction ``tx_hash`` (pending or mined)."""
        with self._translate(tx_hash):
            try:
                self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
                return True
            except TransactionNotFound:
                pass
            try:
                self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
                return True
            except TransactionNotFound:
                return False

    def transaction_state(self, tx_hash: str) -> str:
        """Where transaction ``tx_hash`` stands on the node: ``unknown`` (never received, or
        dropped), ``pending`` (in the mempool), ``succeeded`` or ``reverted`` (mined)."""
        with self._translate(tx_hash):
            try:
                receipt = self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                receipt = None
        if receipt is not None:
            return "succeeded" if receipt["status"] == 1 else "reverted"
        return "pending" if self._is_known(tx_hash) else "unknown"

    def wait_confirmed(self, tx_hash: str) -> TxReceipt:
        """The receipt of ``tx_hash`` once it has ``confirmations`` blocks (any status).

        Raises:
            ChainError: no receipt within ``timeout`` seconds.
        """
        return self._wait_confirmed(tx_hash)

    def _wait_confirmed(self, tx_hash: str) -> TxReceipt:
        """The receipt of ``tx_hash`` once ``confirmations`` blocks include or follow its block.

        If the receipt's block is replaced meanwhile (a reorg), waits for the new receipt.
        """
        deadline = time.monotonic() + self.timeout
        with self._translate(tx_hash):
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash,  # type: ignore[arg-type]
                timeout=self.timeout,
                poll_latency=0.05,
            )
            while self.confirmations > 1:
                target = int(receipt["blockNumber"]) + self.confirmations - 1
                if int(self.w3.eth.block_number) >= target:
                    try:
                        latest = self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
                    except TransactionNotFound:
                        latest = None
                    if latest is not None and latest["blockHash"] == receipt["blockHash"]:
                        break
                    receipt = self.w3.eth.wait_for_transaction_receipt(
                        tx_hash,  # type: ignore[arg-type]
                        timeout=max(deadline - time.monotonic(), 0.1),
                        poll_latency=0.05,
                    )
                    continue
                if time.monotonic() > deadline:
                    raise ChainError(
                        f"{tx_hash} has fewer than {self.confirmations} confirmations after "
                        f"{self.timeout:g} s"
                    )
                time.sleep(0.05)
        return receipt

    def _explain_failure(self, tx: dict[str, Any], receipt: TxReceipt, tx_hash: str) -> ChainError:
        """Replay a failed transaction as a call on its block's parent state to recover why."""
        call = {k: tx[k] for k in ("from", "to", "value", "data", "gas") if k in tx}
        try:
            self.w3.eth.call(call, block_identifier=max(receipt["blockNumber"] - 1, 0))
        except ContractLogicError as exc:
            return self.decode_revert(exc.data, tx_hash)
        except Exception as exc:  # replay itself failed: report the receipt only
            log.debug("replay of %s failed: %s", tx_hash, exc)
        return TransactionFailed(
            f"transaction {tx_hash} failed (status 0, gas used {receipt['gasUsed']})", tx_hash
        )

    def call(self, fn: ContractFunction, *, block: int | str = "latest") -> Any:
        """Call a view function; reverts are translated like :meth:`send`'s."""
        with self._translate():
            return fn.call(block_identifier=block)

    # -- dev-chain helpers (anvil / hardhat) -------------------------------------------------

    def _rpc(self, method: str, params: list[Any]) -> Any:
        with self._translate():
            response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if response.get("error"):
            raise ChainError(f"{method} failed: {response['error']}")
        return response.get("result")

    def set_eth_balance(self, address: str, wei: int) -> None:
        """Set ``address``'s ether balance to ``wei`` (``anvil_setBalance``; dev chains only)."""
        self._rpc("anvil_setBalance", [to_checksum_address(address), hex(wei)])

    def increase_time(self, seconds: int) -> int:
        """Advance the chain clock by ``seconds`` and mine a block (``evm_increaseTime`` +
        ``evm_mine``; dev chains only). Returns the new block's timestamp (Unix seconds)."""
        if seconds < 0:
            raise ChainError(f"cannot move time backwards ({seconds} s)")
        self._rpc("evm_increaseTime", [seconds])
        self._rpc("evm_mine", [])
        return self.block_timestamp()

    def mine(self) -> None:
        """Mine one empty block (dev chains only)."""
        self._rpc("evm_mine", [])

    def block_timestamp(self) -> int:
        """Timestamp of the latest block (Unix seconds)."""
        with self._translate():
            return int(self.w3.eth.get_block("latest")["timestamp"])

    def eth_balance(self, address: str) -> int:
        """Ether balance of ``address`` (wei)."""
        with self._translate():
            return int(self.w3.eth.get_balance(to_checksum_address(address)))


_DUPLICATE_SEND_MESSAGES = (
    "already known",
    "known transaction",
    "nonce too low",
    "already imported",
)


def _is_duplicate_send(exc: Web3RPCError) -> bool:
    """The node refused a raw send as a duplicate or an already-used nonce."""
    return any(m in str(exc).lower() for m in _DUPLICATE_SEND_MESSAGES)


def _tx_hash(receipt: TxReceipt) -> str:
    return "0x" + bytes(receipt["transactionHash"]).hex()


class TokenClient:
    """An ERC-20 token (``TestToken`` / ``FeeOnTransferToken`` or any ERC-20 ABI).

    Amounts are in the token's smallest unit (wei for 18 decimals). Write methods return the
    transaction hash (``0x``-hex) after the receipt succeeded.
    """

    def __init__(
        self, client: ChainClient, address: str, abi: Sequence[dict[str, Any]], name: str = "ERC20"
    ):
        self.client = client
        self.address = to_checksum_address(address)
        self.contract = client.contract(self.address, abi, name)

    @classmethod
    def deploy(
        cls, client: ChainClient, compiled: CompiledContract, sender_key: str
    ) -> TokenClient:
        """Deploy a token without constructor arguments (the test tokens) and wrap it."""
        address = client.deploy(compiled, sender_key=sender_key)
        return cls(client, address, compiled.abi, compiled.name)

    def mint(self, sender_key: str, to: str, amount_wei: int) -> str:
        """Mint ``amount_wei`` to ``to`` (test tokens' open ``mint``)."""
        fn = self.contract.functions.mint(to_checksum_address(to), amount_wei)
        return _tx_hash(self.client.send(fn, sender_key))

    def approve(self, owner_key: str, spender: str, amount_wei: int) -> str:
        """Let ``spender`` move up to ``amount_wei`` of the owner's tokens."""
        fn = self.contract.functions.approve(to_checksum_address(spender), amount_wei)
        return _tx_hash(self.client.send(fn, owner_key))

    def transfer(self, sender_key: str, to: str, amount_wei: int) -> str:
        """Transfer ``amount_wei`` from the sender to ``to``."""
        fn = self.contract.functions.transfer(to_checksum_address(to), amount_wei)
        return _tx_hash(self.client.send(fn, sender_key))

    def balance_of(self, address: str) -> int:
        """Token balance of ``address`` (wei)."""
        return int(
            self.client.call(self.contract.functions.balanceOf(to_checksum_address(address)))
        )

    def allowance(self, owner: str, spender: str) -> int:
        """Remaining allowance of ``spender`` over ``owner``'s tokens (wei)."""
        fn = self.contract.functions.allowance(
            to_checksum_address(owner), to_checksum_address(spender)
        )
        return int(self.client.call(fn))

    def total_supply(self) -> int:
        """Total supply (wei)."""
        return int(self.client.call(self.contract.functions.totalSupply()))


# -- helpers -------------------------------------------------------------------------------------

_ERC20_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "approve",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "spender", "type": "address"}, {"name": "value", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "transfer",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "to", "type": "address"}, {"name": "value", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "balanceOf",
        "stateMutability": "view",
        "inputs": [{"name": "account", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "allowance",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "totalSupply",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint256"}],
    },
]
"""Minimal ERC-20 ABI, used when no token ABI is given."""


def _revert_bytes(data: str | bytes | dict | None) -> bytes:
    """Revert data as bytes from the shapes nodes and web3 report it in."""
    if data is None:
        return b""
    if isinstance(data, dict):  # some nodes nest it: {"data": "0x..."} or {"<tx>": {...}}
        inner = data.get("data")
        if inner is None and data:
            inner = next(iter(data.values()))
        return _revert_bytes(inner)
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    text = data.strip()
    if text.startswith("Reverted "):
        text = text.split(" ", 1)[1]
    try:
        return to_bytes(hexstr=text)
    except ValueError:
        return b""


def _normalise(abi_type: str, value: Any) -> Any:
    """Checksum decoded addresses (top level and arrays of addresses)."""
    if abi_type == "address":
        return to_checksum_address(value)
    if abi_type.startswith("address[") and isinstance(value, list | tuple):
        return tuple(to_checksum_address(v) for v in value)
    return value
