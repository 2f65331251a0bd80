"""Whose keys act for a campaign: the oracle signers, the sponsor (who also relays), the holders.

Keys come from the settings (``CCOMP_SPONSOR_KEY``, ``CCOMP_ORACLE_KEYS`` or encrypted keystores
in ``CCOMP_KEYSTORE_DIR``). On a local anvil node the missing ones are anvil's well-known dev
accounts (:data:`DEV_DEPLOYER`, :data:`DEV_SPONSOR`, :data:`DEV_SIGNERS`), for demos only; on
any other chain a missing key is an error. No key is ever logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import SecretStr

from offchain.chain import DEFAULT_MNEMONIC, derive_private_keys
from offchain.config import Settings
from offchain.data.holders import Holder, holder_private_key
from offchain.errors import ConfigError
from offchain.oracle.keystore import load_keystores, read_password

if TYPE_CHECKING:  # web3-backed client, for the annotation only: key resolution stays light
    from offchain.chain import ChainClient

__all__ = [
    "DEV_ACCOUNTS",
    "DEV_DEPLOYER",
    "DEV_SIGNERS",
    "DEV_SPONSOR",
    "HOLDER_GAS_WEI",
    "check_keys",
    "dev_keys",
    "holder_claim_keys",
    "signer_keys",
    "sponsor_key",
]

DEV_ACCOUNTS = 10
"""Dev accounts of anvil's public mnemonic (those a local anvil node funds)."""
DEV_DEPLOYER = 0
"""Dev account that deploys the token and the pool on a local anvil node."""
DEV_SPONSOR = 2
"""Dev account of the sponsor (creates and funds the campaign, relays the rounds)."""
DEV_SIGNERS: tuple[int, ...] = (5, 6, 7)
"""Dev accounts of the oracle signers."""
HOLDER_GAS_WEI = 10**18
"""Gas money (1 ETH) a dev chain gives each demo holder that claims for itself."""


def dev_keys(dev: bool) -> list[str] | None:
    """The :data:`DEV_ACCOUNTS` keys of anvil's public mnemonic with ``dev``, else None."""
    return derive_private_keys(DEFAULT_MNEMONIC, DEV_ACCOUNTS) if dev else None


def signer_keys(
    settings: Settings, dev_keys: list[str] | None, *, check_threshold: bool = True
) -> list[str]:
    """The oracle signer keys: from the keystores in ``keystore_dir``, configured, or dev
    accounts :data:`DEV_SIGNERS` (``dev_keys``, on a local anvil node).

    Raises:
        ConfigError: no keys on a remote chain, a keystore that cannot be opened, or (with
            ``check_threshold``: all signers are local) a threshold above the number of keys.
    """
    if settings.keystore_dir is not None:
        if settings.oracle_keys:
            raise ConfigError("both keystore_dir and oracle_keys are set; give one")
        password = read_password(settings.keystore_password_file, settings.keystore_password)
        keys = load_keystores(settings.keystore_dir, password)
    elif settings.oracle_keys:
        keys = [k.get_secret_value() for k in settings.oracle_keys]
    elif dev_keys is not None:
        keys = [dev_keys[i] for i in DEV_SIGNERS]
    else:
        raise ConfigError("oracle signer keys are required on a remote chain "
                          "(set CCOMP_KEYSTORE_DIR or CCOMP_ORACLE_KEYS)")
    if check_threshold and settings.oracle_threshold > len(keys):
        raise ConfigError(f"oracle_threshold {settings.oracle_threshold} exceeds the "
                          f"{len(keys)} signer keys")
    return keys


def sponsor_key(settings: Settings, dev_keys: list[str] | None) -> str:
    """The sponsor's key: ``settings.sponsor_key``, else dev account :data:`DEV_SPONSOR`.

    Raises:
        ConfigError: no sponsor key on a remote chain (``dev_keys`` None).
    """
    return _key(settings.sponsor_key, dev_keys, DEV_SPONSOR, "sponsor")


def check_keys(settings: Settings) -> None:
    """Fail early if the oracle or sponsor keys cannot be had (remote chain without keys, a
    keystore that does not open); on a local anvil node its dev accounts stand in.

    Raises:
        ConfigError: as :func:`signer_keys` and :func:`sponsor_key`.
    """
    dev_placeholders = None if settings.rpc_url is not None else [""] * DEV_ACCOUNTS
    signer_keys(settings, dev_placeholders, check_threshold=settings.oracle_signers is None)
    sponsor_key(settings, dev_placeholders)


def _key(secret: SecretStr | None, dev_keys: list[str] | None, dev_index: int, what: str) -> str:
    if secret is not None:
        return secret.get_secret_value()
    if dev_keys is None:
        raise ConfigError(f"{what} key is required on a remote chain (set CCOMP_{what.upper()}_KEY)")
    return dev_keys[dev_index]


def holder_claim_keys(
    settings: Settings, holders: Sequence[Holder], client: ChainClient, dev_chain: bool
) -> dict[str, str]:
    """Keys of the shipped demo holders (address → key), who claim for themselves; on a dev
    chain each gets :data:`HOLDER_GAS_WEI` of gas money once. Own holders (``holders_dir``) are
    claimed for by the relayer."""
    claim_keys: dict[str, str] = {}
    if settings.holders_dir is None:
        for holder in holders:
            claim_keys[holder.address] = holder_private_key(holder.name)
            if dev_chain and client.eth_balance(holder.address) == 0:
                client.set_eth_balance(holder.address, HOLDER_GAS_WEI)
    return claim_keys
