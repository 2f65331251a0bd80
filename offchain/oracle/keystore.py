"""Encrypted keystores of the oracle signer keys (Web3 Secret Storage v3, eth-account).

One file per key, ``<dir>/<checksum address>.json``, mode ``0600`` in a ``0700`` folder, encrypted
with scrypt (eth-account's default parameters) under one password. The password comes from a
file that only its owner can read (``CCOMP_KEYSTORE_PASSWORD_FILE``) or from the environment
(``CCOMP_KEYSTORE_PASSWORD``), and placeholder or weak passwords are refused at start-up.

No function here logs or echoes a private key or a password: errors name the file and the rule.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

from eth_account import Account
from eth_utils import to_checksum_address
from pydantic import SecretStr

from offchain.errors import ConfigError

__all__ = [
    "PASSWORD_ENV",
    "check_password",
    "create_keystore",
    "list_keystores",
    "load_keystores",
    "read_password",
]

logger = logging.getLogger(__name__)

PASSWORD_ENV = "CCOMP_KEYSTORE_PASSWORD"
"""The variable of the setting ``keystore_password`` (named in errors)."""
"""Environment variable holding the keystore password when no password file is given."""
MIN_PASSWORD_CHARS = 12
"""Shortest accepted keystore password."""
PLACEHOLDER_PASSWORDS = ("changeme", "password", "secret", "test", "example", "placeholder", "0000")
"""Refused as a password and as its start (case-insensitive): ``changeme123`` is a placeholder."""

KDF: Literal["scrypt", "pbkdf2"] = "scrypt"
"""Key derivation of new keystores (tests may switch to cheap parameters, never the node)."""
KDF_ITERATIONS: int | None = None
"""KDF work factor of new keystores; None: eth-account's default (scrypt n = 2**18)."""


def create_keystore(directory: Path, password: str, private_key: str | None = None) -> str:
    """Encrypt ``private_key`` (a new random key when None) into ``directory``.

    Writes ``<directory>/<checksum address>.json`` atomically with mode ``0600``; a new
    ``directory`` is created with mode ``0700``.

    Returns:
        The checksum address of the key.

    Raises:
        ConfigError: the password is weak, the key is malformed, or a keystore of the same
            address already exists there.
    """
    check_password(password)
    try:
        account = Account.create() if private_key is None else Account.from_key(private_key)
    except (ValueError, TypeError) as exc:  # the message of eth-keys never holds the key
        raise ConfigError("the private key to import is not a 32-byte hex key") from exc
    directory = Path(directory)
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
        os.chmod(directory, 0o700)  # mkdir's mode is reduced by the umask
    elif not directory.is_dir():
        raise ConfigError(f"keystore directory {directory} is not a directory")
    target = directory / f"{account.address}.json"
    if target.exists():
        raise ConfigError(f"a keystore of {account.address} already exists: {target}")
    keyfile = Account.encrypt(account.key, password, kdf=KDF, iterations=KDF_ITERATIONS)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(keyfile, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o600)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.info("wrote keystore of %s to %s", account.address, target)
    return account.address


def list_keystores(directory: Path) -> list[str]:
    """Checksum addresses of the keystores in ``directory`` (``*.json``), sorted; no decryption.

    Raises:
        ConfigError: the directory is missing, or a ``.json`` file there is not a keystore.
    """
    return sorted(_address(path, keyfile) for path, keyfile in _keyfiles(directory))


def load_keystores(directory: Path, password: str) -> list[str]:
    """Decrypt every keystore (``*.json``) in ``directory``: private keys as ``0x`` hex,
    sorted by address.

    Raises:
        ConfigError: the directory is missing or holds no keystore, a ``.json`` file there is
            not a keystore, or ``password`` does not open one (the error names the file).
    """
    keys: dict[str, str] = {}
    for path, keyfile in _keyfiles(directory):
        try:
            key = Account.decrypt(keyfile, password)
        except ValueError as exc:  # MAC mismatch
            raise ConfigError(f"wrong keystore password for {path}") from exc
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is not a keystore (malformed crypto section)") from exc
        address = Account.from_key(key).address
        if "address" in keyfile and _address(path, keyfile) != address:
            raise ConfigError(f"{path} decrypts to another address than it names")
        keys[address] = "0x" + bytes(key).hex()
    if not keys:
        raise ConfigError(f"no keystore (*.json) in {directory}")
    return [keys[address] for address in sorted(keys)]


def check_password(password: str) -> None:
    """Refuse an empty, short (< 12 characters) or placeholder password.

    Raises:
        ConfigError: naming the rule the password breaks (never the password).
    """
    if not password:
        raise ConfigError("keystore password is empty")
    lowered = password.lower()
    if lowered.startswith(PLACEHOLDER_PASSWORDS):
        raise ConfigError(
            "keystore password is a placeholder or starts with one (see "
            "offchain.oracle.keystore.PLACEHOLDER_PASSWORDS); choose a real secret"
        )
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConfigError(f"keystore password is shorter than {MIN_PASSWORD_CHARS} characters")


def read_password(password_file: Path | None, password: SecretStr | str | None = None) -> str:
    """The keystore password: from ``password_file`` (one trailing newline stripped; the file
    must not be readable by group or others), else ``password`` (the setting
    ``keystore_password``, ``CCOMP_KEYSTORE_PASSWORD``).

    Raises:
        ConfigError: the file is missing or readable by others, no password is given, or the
            password fails :func:`check_password`.
    """
    if password_file is not None:
        path = Path(password_file)
        try:
            mode = path.stat().st_mode
            if mode & 0o077:
                raise ConfigError(
                    f"password file {path} is readable by group or others "
                    f"(mode {mode & 0o777:o}); chmod 600 it"
                )
            password = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read password file {path}: {exc.strerror}") from exc
        if password.endswith("\r\n"):
            password = password[:-2]
        elif password.endswith("\n"):
            password = password[:-1]
    elif password is None:
        raise ConfigError(
            f"keystore password missing: set {PASSWORD_ENV} or give a password file "
            "(CCOMP_KEYSTORE_PASSWORD_FILE)"
        )
    elif isinstance(password, SecretStr):
        password = password.get_secret_value()
    check_password(password)
    return password


def _keyfiles(directory: Path) -> list[tuple[Path, dict]]:
    """(path, parsed JSON) of each ``*.json`` in ``directory``, checked to be a v3 keystore."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"keystore directory {directory} does not exist")
    found = []
    for path in sorted(directory.glob("*.json")):
        if not path.is_file():
            continue
        try:
            keyfile = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} is not a keystore (not readable JSON)") from exc
        if (
            not isinstance(keyfile, dict)
            or keyfile.get("version") != 3
            or not isinstance(keyfile.get("crypto", keyfile.get("Crypto")), dict)
        ):
            raise ConfigError(f"{path} is not a keystore (no version-3 crypto section)")
        found.append((path, keyfile))
    return found


def _address(path: Path, keyfile: dict) -> str:
    try:
        return to_checksum_address(keyfile["address"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a keystore (no valid address field)") from exc
