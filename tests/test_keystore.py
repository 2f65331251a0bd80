"""Encrypted keystores of the oracle keys, the password rules, and secrets kept out of settings."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from eth_account import Account
from typer.testing import CliRunner

from offchain.cli.main import app
from offchain.config import Settings
from offchain.errors import ConfigError
from offchain.oracle import keystore
from offchain.oracle.keys import signer_keys
from offchain.oracle.keystore import (
    check_password,
    create_keystore,
    list_keystores,
    load_keystores,
    read_password,
)

PASSWORD = "correct horse battery staple"
# anvil's public dev keys 5 and 6
KEY_A = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"
KEY_B = "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e"


@pytest.fixture(autouse=True)
def _cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scrypt with n = 16 instead of 2**18: same code path, milliseconds instead of seconds."""
    monkeypatch.setattr(keystore, "KDF_ITERATIONS", 16)
    monkeypatch.delenv("CCOMP_KEYSTORE_PASSWORD", raising=False)


def _password_file(tmp_path: Path, password: str = PASSWORD, mode: int = 0o600) -> Path:
    path = tmp_path / "password.txt"
    path.write_text(password + "\n")
    path.chmod(mode)
    return path


def test_keystore_round_trip_returns_keys_sorted_by_address(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    addresses = [create_keystore(directory, PASSWORD, key) for key in (KEY_A, KEY_B)]

    assert addresses == [Account.from_key(k).address for k in (KEY_A, KEY_B)]
    assert list_keystores(directory) == sorted(addresses)
    loaded = load_keystores(directory, PASSWORD)
    assert sorted(zip(addresses, (KEY_A, KEY_B), strict=True)) == list(
        zip(sorted(addresses), loaded, strict=True)
    )
    keyfile = json.loads((directory / f"{addresses[0]}.json").read_text())
    assert keyfile["crypto"]["kdf"] == "scrypt"
    assert KEY_A[2:] not in (directory / f"{addresses[0]}.json").read_text()


def test_new_keystore_without_key_makes_a_random_key(tmp_path: Path) -> None:
    address = create_keystore(tmp_path / "keys", PASSWORD)
    [key] = load_keystores(tmp_path / "keys", PASSWORD)
    assert Account.from_key(key).address == address


def test_keystore_file_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    address = create_keystore(directory, PASSWORD, KEY_A)
    assert stat.S_IMODE((directory / f"{address}.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert [p.name for p in directory.iterdir()] == [f"{address}.json"]  # no temp file left


def test_load_keystores_names_the_file_on_wrong_password(tmp_path: Path) -> None:
    address = create_keystore(tmp_path, PASSWORD, KEY_A)
    with pytest.raises(ConfigError, match="wrong keystore password") as info:
        load_keystores(tmp_path, "another long password")
    assert f"{address}.json" in str(info.value)
    assert KEY_A[2:] not in str(info.value)


def test_create_keystore_refuses_to_overwrite_the_same_address(tmp_path: Path) -> None:
    create_keystore(tmp_path, PASSWORD, KEY_A)
    with pytest.raises(ConfigError, match="already exists"):
        create_keystore(tmp_path, "a different password", KEY_A)
    assert load_keystores(tmp_path, PASSWORD) == [KEY_A]


@pytest.mark.parametrize("content", ["not json", '{"version": 3}', "[1, 2]"])
def test_load_keystores_names_a_file_that_is_not_a_keystore(tmp_path: Path, content: str) -> None:
    create_keystore(tmp_path, PASSWORD, KEY_A)
    (tmp_path / "notes.json").write_text(content)
    for call in (lambda: load_keystores(tmp_path, PASSWORD), lambda: list_keystores(tmp_path)):
        with pytest.raises(ConfigError, match=r"notes\.json is not a keystore"):
            call()


def test_load_keystores_refuses_a_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_keystores(tmp_path / "nowhere", PASSWORD)
    with pytest.raises(ConfigError, match="no keystore"):
        load_keystores(tmp_path, PASSWORD)


@pytest.mark.parametrize(
    "password",
    [
        "",
        "short-pw",
        "changeme",
        "ChangeMe1234567",
        "password-of-the-oracle",
        "SECRET-secret-secret",
        "test-test-test-test",
        "example passphrase",
        "placeholder-value-x",
        "000000000000000",
    ],
)
def test_check_password_refuses_placeholder_and_weak_passwords(password: str) -> None:
    with pytest.raises(ConfigError, match="keystore password is") as info:
        check_password(password)
    if password:
        assert password not in str(info.value)


def test_check_password_accepts_a_real_passphrase() -> None:
    check_password(PASSWORD)


def test_read_password_refuses_a_world_readable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="readable by group or others"):
        read_password(_password_file(tmp_path, mode=0o644))


def test_read_password_strips_one_newline_and_falls_back_to_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert read_password(_password_file(tmp_path)) == PASSWORD
    with pytest.raises(ConfigError, match="CCOMP_KEYSTORE_PASSWORD"):
        read_password(None, Settings().keystore_password)
    monkeypatch.setenv("CCOMP_KEYSTORE_PASSWORD", "changeme123")
    with pytest.raises(ConfigError, match="placeholder"):
        read_password(None, Settings().keystore_password)
    monkeypatch.setenv("CCOMP_KEYSTORE_PASSWORD", PASSWORD)
    assert read_password(None, Settings().keystore_password) == PASSWORD


def test_settings_never_show_keys_given_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCOMP_ORACLE_KEYS", json.dumps([KEY_A, KEY_B]))
    monkeypatch.setenv("CCOMP_SPONSOR_KEY", KEY_B)
    monkeypatch.setenv("CCOMP_KEYSTORE_PASSWORD", PASSWORD)
    settings = Settings()

    assert [k.get_secret_value() for k in settings.oracle_keys or []] == [KEY_A, KEY_B]
    assert settings.sponsor_key is not None and settings.sponsor_key.get_secret_value() == KEY_B
    for text in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        str(settings.model_dump()),
    ):
        for secret in (KEY_A, KEY_B, KEY_A[2:], KEY_B[2:], PASSWORD):
            assert secret not in text


def test_settings_refuse_keystore_dir_together_with_oracle_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both keystore_dir and oracle_keys"):
        Settings(keystore_dir=tmp_path, oracle_keys=[KEY_A])


def test_signer_keys_come_from_the_keystore_dir_when_set(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    for key in (KEY_A, KEY_B):
        create_keystore(directory, PASSWORD, key)
    settings = Settings(
        keystore_dir=directory,
        keystore_password_file=_password_file(tmp_path),
        oracle_threshold=2,
        rpc_url="http://127.0.0.1:1",
    )
    dev_keys = ["0x" + f"{i + 1:064x}" for i in range(10)]

    keys = signer_keys(settings, dev_keys)  # keystores win over the dev accounts
    assert sorted(keys) == sorted([KEY_A, KEY_B])
    assert [Account.from_key(k).address for k in keys] == list_keystores(directory)

    with pytest.raises(ConfigError, match="exceeds the 2 signer keys"):
        signer_keys(settings.model_copy(update={"oracle_threshold": 3}), None)


def test_keys_cli_creates_imports_and_lists_addresses_only(tmp_path: Path) -> None:
    runner = CliRunner()
    directory = tmp_path / "keys"
    password_file = _password_file(tmp_path)
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY_A + "\n")

    imported = runner.invoke(
        app,
        [
            "keys",
            "new",
            "--dir",
            str(directory),
            "--password-file",
            str(password_file),
            "--import-key-file",
            str(key_file),
        ],
    )
    assert imported.exit_code == 0, imported.output
    assert imported.output.strip() == Account.from_key(KEY_A).address

    fresh = runner.invoke(
        app, ["keys", "new", "--dir", str(directory)], env={"CCOMP_KEYSTORE_PASSWORD": PASSWORD}
    )
    assert fresh.exit_code == 0, fresh.output

    listed = runner.invoke(app, ["keys", "list", "--dir", str(directory)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.split() == sorted([imported.output.strip(), fresh.output.strip()])
    for result in (imported, fresh, listed):
        assert KEY_A[2:] not in result.output and PASSWORD not in result.output

    again = runner.invoke(
        app,
        [
            "keys",
            "new",
            "--dir",
            str(directory),
            "--password-file",
            str(password_file),
            "--import-key-file",
            str(key_file),
        ],
    )
    assert again.exit_code == 1
    assert "already exists" in again.output

    weak = runner.invoke(
        app, ["keys", "new", "--dir", str(directory)], env={"CCOMP_KEYSTORE_PASSWORD": "changeme"}
    )
    assert weak.exit_code == 1
    assert "placeholder" in weak.output
    assert os.listdir(directory) and len(list_keystores(directory)) == 2
