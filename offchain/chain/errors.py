"""Errors raised by :mod:`offchain.chain`; all derive from :class:`offchain.errors.ChainError`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from offchain.errors import ChainError

__all__ = ["ChainError", "ContractRevert", "TransactionFailed"]


class TransactionFailed(ChainError):
    """A mined transaction has ``status == 0`` and its revert reason could not be recovered.

    Attributes:
        tx_hash: The transaction hash, ``0x``-hex.
    """

    def __init__(self, message: str, tx_hash: str | None = None) -> None:
        super().__init__(message)
        self.tx_hash = tx_hash


class ContractRevert(ChainError):
    """A call or transaction reverted with a decodable reason.

    Custom Solidity errors (``error InvalidSigner(address recovered, address expected)``) are
    decoded with the contract ABIs; ``Error(string)`` and ``Panic(uint256)`` map to the names
    ``"Error"`` and ``"Panic"``.

    Attributes:
        contract: Name of the contract whose ABI declared the error (``"CompensationPool"``), or
            ``None`` when unknown.
        name: Error name, e.g. ``"InvalidSigner"``.
        args: Decoded arguments in declaration order (addresses checksummed, bytes as ``bytes``).
        arg_names: The ABI's parameter names, in the same order as ``args``.
        data: The raw revert data, ``0x``-hex.
        tx_hash: The transaction hash when a sent transaction reverted, else ``None``.
    """

    def __init__(
        self,
        *,
        contract: str | None,
        name: str,
        args: Sequence[Any],
        arg_names: Sequence[str],
        data: str,
        tx_hash: str | None = None,
    ) -> None:
        decoded = tuple(args)
        rendered = ", ".join(
            f"{n}={_render(v)}" if n else _render(v)
            for n, v in zip(arg_names, decoded, strict=True)
        )
        self.message = f"{contract or 'contract'} reverted {name}({rendered})"
        super().__init__(self.message)
        # ``BaseException.args`` is replaced by the decoded error arguments on purpose: callers
        # match ``exc.name`` and ``exc.args`` like a Solidity error; ``str(exc)`` keeps the message.
        self.args = decoded
        self.contract = contract
        self.name = name
        self.arg_names = tuple(arg_names)
        self.data = data
        self.tx_hash = tx_hash

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # keep pickling (multiprocessing, pytest-xdist) working
        return (
            _rebuild_revert,
            (self.contract, self.name, self.args, self.arg_names, self.data, self.tx_hash),
        )


def _rebuild_revert(contract, name, args, arg_names, data, tx_hash) -> ContractRevert:
    return ContractRevert(
        contract=contract, name=name, args=args, arg_names=arg_names, data=data, tx_hash=tx_hash
    )


def _render(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str) and not value.startswith("0x"):
        return repr(value)
    return str(value)
