"""Run a local anvil dev chain (Foundry) for demos and tests.

The binary is found in this order: ``$ANVIL_PATH``; the npm package's native binary
``node_modules/@foundry-rs/anvil-<platform>/bin/anvil`` (any platform directory that exists);
``anvil`` on ``PATH``. It is run directly, never through ``npx``, so the process kept is anvil's
own and :meth:`AnvilNode.stop` really stops the chain.

Example::

    with AnvilNode(accounts=5) as node:
        client = ChainClient(node.rpc_url)
        deployer_key = node.private_keys[0]
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType

from offchain.chain.compiler import project_root
from offchain.chain.errors import ChainError

__all__ = ["DEFAULT_MNEMONIC", "AnvilNode", "derive_private_keys", "find_anvil"]

log = logging.getLogger(__name__)

DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
"""anvil's (and Hardhat's) public dev mnemonic. Its keys are public: dev chains only."""

_PORT_ATTEMPTS = 5


def find_anvil() -> str:
    """Path of the anvil executable: the npm toolchain's (``<project>/node_modules``), else
    ``PATH``. An operator points elsewhere with the setting ``anvil_path``
    (``CCOMP_ANVIL_PATH``), which the node passes to :class:`AnvilNode`.

    Raises:
        ChainError: none found.
    """
    node_modules = project_root() / "node_modules"
    for candidate in sorted((node_modules / "@foundry-rs").glob("anvil-*/bin/anvil")):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    raise ChainError(
        "anvil not found: set CCOMP_ANVIL_PATH, run `npm ci` (installs @foundry-rs/anvil) or "
        "put Foundry's anvil on PATH"
    )


def derive_private_keys(mnemonic: str, count: int) -> list[str]:
    """The first ``count`` private keys (``0x``-hex) of ``mnemonic`` on path ``m/44'/60'/0'/0/i``.

    These are the keys anvil funds with ``--mnemonic mnemonic --accounts count``.
    """
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    keys = []
    for i in range(count):
        account = Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}")
        keys.append("0x" + bytes(account.key).hex())
    return keys


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _terminate(
    proc: subprocess.Popen[bytes], log_file: Path, cache_dir: Path | None = None
) -> None:
    """Stop ``proc`` (SIGTERM, then SIGKILL after 5 s) and delete its log and its state cache
    folder (``cache_dir``, created for it by :meth:`AnvilNode.start`). Idempotent."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    try:
        log_file.unlink(missing_ok=True)
    except OSError:
        pass
    if cache_dir is not None:
        shutil.rmtree(cache_dir, ignore_errors=True)


class AnvilNode:
    """A running anvil process on ``127.0.0.1`` at a free port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. The process is also
    stopped when the object is garbage-collected and at interpreter exit.

    Args:
        chain_id: EIP-155 chain id the node reports (default 31337).
        accounts: Number of funded dev accounts (default 10), each with ``balance_eth`` ether.
        balance_eth: Starting balance of each dev account, in ether.
        mnemonic: Mnemonic the dev accounts derive from (default: anvil's public dev mnemonic).
        block_time: Seconds between blocks; ``None`` (default) mines one block per transaction.
        startup_timeout: Seconds to wait for ``eth_chainId`` to answer.
        extra_args: More command-line arguments passed to anvil as they are.
        anvil_path: Executable; default :func:`find_anvil`.

    Attributes:
        rpc_url: ``http://127.0.0.1:<port>`` once started.
        chain_id: The chain id.
        private_keys: ``0x``-hex private keys of the funded dev accounts (public keys: never use
            them on a real network).
        pid: anvil's process id once started.
    """

    def __init__(
        self,
        chain_id: int = 31337,
        *,
        accounts: int = 10,
        balance_eth: int = 10_000,
        mnemonic: str = DEFAULT_MNEMONIC,
        block_time: float | None = None,
        startup_timeout: float = 15.0,
        extra_args: list[str] | None = None,
        anvil_path: str | None = None,
    ) -> None:
        if accounts < 1:
            raise ChainError(f"accounts must be ≥ 1, got {accounts}")
        self.chain_id = chain_id
        self.accounts = accounts
        self.balance_eth = balance_eth
        self.mnemonic = mnemonic
        self.block_time = block_time
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.anvil_path = anvil_path
        self.rpc_url: str = ""
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._private_keys: list[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> AnvilNode:
        """Start anvil and wait until it answers ``eth_chainId``.

        Retries on a fresh port when another process grabbed the chosen one first.

        Raises:
            ChainError: anvil missing, exited early, or not ready within ``startup_timeout``
                seconds (the message carries anvil's output).
        """
        if self.running:
            return self
        binary = self.anvil_path or find_anvil()
        last_error = ""
        for _ in range(_PORT_ATTEMPTS):
            port = _free_port()
            fd, log_name = tempfile.mkstemp(prefix="anvil-", suffix=".log")
            log_file = Path(log_name)
            # anvil writes old states to disk once a chain grows (3 GB for a gas benchmark's
            # thousands of blocks) under ~/.foundry/anvil/tmp and leaves them when stopped: give
            # it a folder of its own, deleted with the process.
            own_cache = "--cache-path" not in self.extra_args
            cache_dir = Path(tempfile.mkdtemp(prefix="anvil-cache-")) if own_cache else None
            cmd = [
                binary,
                "--host", "127.0.0.1",
                "--port", str(port),
                "--chain-id", str(self.chain_id),
                "--accounts", str(self.accounts),
                "--balance", str(self.balance_eth),
                "--mnemonic", self.mnemonic,
                *(["--block-time", str(self.block_time)] if self.block_time else []),
                *(["--cache-path", str(cache_dir)] if cache_dir else []),
                *self.extra_args,
            ]  # fmt: skip
            with os.fdopen(fd, "wb") as out:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                )
            self._proc = proc
            self._finalizer = weakref.finalize(self, _terminate, proc, log_file, cache_dir)
            self.port = port
            self.rpc_url = f"http://127.0.0.1:{port}"
            outcome = self._wait_ready(proc, log_file)
            if outcome is None:
                log.info(
                    "anvil pid %d ready at %s (chain id %d)", proc.pid, self.rpc_url, self.chain_id
                )
                return self
            last_error = outcome
            self._finalizer()  # stops the process, removes the log
            self._proc = None
            if "in use" not in outcome.lower():
                break
        self.rpc_url = ""
        self.port = None
        raise ChainError(f"anvil did not start: {last_error}")

    def _wait_ready(self, proc: subprocess.Popen[bytes], log_file: Path) -> str | None:
        """``None`` once the node answers with our chain id, else a reason with anvil's output."""
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return f"exited with code {proc.returncode}: {_tail(log_file)}"
            try:
                reported = int(_rpc(self.rpc_url, "eth_chainId"), 16)
            except (OSError, ValueError, urllib.error.URLError):
                time.sleep(0.05)
                continue
            if reported != self.chain_id:
                return (
                    f"node at {self.rpc_url} reports chain id {reported}, expected {self.chain_id}"
                )
            return None
        return f"no answer from {self.rpc_url} within {self.startup_timeout:g} s: {_tail(log_file)}"

    def stop(self) -> None:
        """Terminate anvil (SIGTERM, SIGKILL after 5 s). Safe to call more than once."""
        if self._finalizer is not None:
            self._finalizer()
        self._proc = None

    @property
    def running(self) -> bool:
        """Whether the anvil process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """anvil's process id, or ``None`` when not started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def private_keys(self) -> list[str]:
        """Private keys (``0x``-hex) of the ``accounts`` funded dev accounts, in anvil's order."""
        if self._private_keys is None:
            self._private_keys = derive_private_keys(self.mnemonic, self.accounts)
        return self._private_keys

    def __enter__(self) -> AnvilNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid} {self.rpc_url}" if self.running else "stopped"
        return f"AnvilNode(chain_id={self.chain_id}, {state})"


def _rpc(url: str, method: str, params: list | None = None, timeout: float = 2.0) -> str:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if "error" in reply:
        raise ValueError(str(reply["error"]))
    return reply["result"]


def _tail(log_file: Path, limit: int = 2000) -> str:
    try:
        text = log_file.read_text(errors="replace").strip()
    except OSError:
        return "(no output)"
    return text[-limit:] or "(no output)"
