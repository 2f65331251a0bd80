"""``offchain register-holder``: sign a holder registration for a local image folder and send it.

The command hashes the folder's image files (names ending ``.png``, ``.jpg``, ``.jpeg``, not
starting with ``.``), reads their captions where the folder has them (``captions.json`` or
sidecar ``<stem>.txt``, the round loader's rule: all or none), signs the v2 registration message
(:func:`offchain.api.registration.registration_message`, which covers ``--replace``) with the
holder's key and registers:

* ``--api URL``: ``POST URL/holders`` with the files (multipart upload), or with ``--manifest``
  ``POST URL/holders/manifest`` with the hashes and the folder's absolute path (the server reads
  the files itself; the folder must lie inside one of its ``--manifest-root`` folders);
* ``--holders-dir PATH``: directly into a holders folder through
  :func:`offchain.api.registration.register_holder` (no server).

The key comes from an encrypted keystore (``--keystore``, password from ``--password-file`` or
``$CCOMP_KEYSTORE_PASSWORD``) or, for local demos only, an anvil dev account (``--dev-index``).
No key or password is ever printed.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from eth_account import Account
from eth_account.messages import encode_defunct
from rich.console import Console
from rich.table import Table

from offchain.api.registration import Registration, register_holder, registration_message
from offchain.config import settings_from
from offchain.data.holders import IMAGE_EXTENSIONS, folder_captions
from offchain.errors import ConfigError, OffchainError
from offchain.oracle.keys import DEV_ACCOUNTS, dev_keys
from offchain.oracle.keystore import load_keystores, read_password

__all__ = ["private_key", "register_holder_cmd"]

console = Console()

_CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _fail(message: str | OffchainError) -> None:
    console.print(f"[bold red]error:[/bold red] {message}")
    raise typer.Exit(code=1)


def _image_files(folder: Path) -> list[Path]:
    """The folder's image files, sorted by name.

    Raises:
        ConfigError: the folder does not exist or holds no image file.
    """
    if not folder.is_dir():
        raise ConfigError(f"--images {folder} is not a folder")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise ConfigError(f"--images {folder} holds no .png/.jpg/.jpeg file")
    return files


def private_key(keystore: Path | None, password_file: Path | None, dev_index: int | None) -> str:
    """The signing key, ``0x`` hex, from exactly one of a keystore or a dev account.

    Raises:
        ConfigError: neither or both sources given, a wrong password, a keystore folder with
            other than one key, a dev index out of range.
    """
    if (keystore is None) == (dev_index is None):
        raise ConfigError("give exactly one key source: --keystore PATH or --dev-index N")
    if dev_index is not None:
        if not 0 <= dev_index < DEV_ACCOUNTS:
            raise ConfigError(f"--dev-index must lie in [0, {DEV_ACCOUNTS - 1}], got {dev_index}")
        return dev_keys(True)[dev_index]
    assert keystore is not None
    password = read_password(password_file, settings_from().keystore_password)
    if keystore.is_file():  # one keystore file: decrypt it alone
        try:
            keyfile = json.loads(keystore.read_text())
            return "0x" + bytes(Account.decrypt(keyfile, password)).hex()
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read keystore {keystore}") from exc
        except ValueError as exc:
            raise ConfigError(f"wrong keystore password for {keystore}") from exc
    keys = load_keystores(keystore, password)
    if len(keys) != 1:
        raise ConfigError(
            f"keystore folder {keystore} holds {len(keys)} keys; name one file with --keystore"
        )
    return keys[0]


def _captions_by_hash(folder: Path, files: list[Path], hashes: list[str]) -> dict[str, str] | None:
    """The folder's captions (``captions.json`` or sidecar ``<stem>.txt``, as the round loader
    reads them) keyed by each image's SHA-256 hex; None when it has none.

    Raises:
        DataError: as :func:`offchain.data.holders.folder_captions` (an image without a caption
            when others have one, an invalid caption …).
    """
    by_name = folder_captions(folder, files)
    if by_name is None:
        return None
    return {digest: by_name[p.name] for p, digest in zip(files, hashes, strict=True)}


def _signed_fields(
    key: str,
    name: str,
    price_wei: int,
    hashes: list[str],
    issued_at: int,
    replace: bool,
    captions: dict[str, str] | None = None,
) -> dict[str, str]:
    """The registration's form fields, signed (the message covers ``replace`` and, when
    given, the captions' root)."""
    account = Account.from_key(key)
    message = registration_message(
        account.address, name, price_wei, hashes, issued_at, replace=replace, captions=captions
    )
    signature = account.sign_message(encode_defunct(text=message)).signature.hex()
    return {
        "address": account.address,
        "name": name,
        "reservation_price_wei": str(price_wei),
        "issued_at": str(issued_at),
        "signature": "0x" + signature.removeprefix("0x"),
    }


def _post(
    api: str,
    fields: dict[str, str],
    files: list[Path],
    manifest: bool,
    replace: bool,
    captions: dict[str, str] | None = None,
) -> dict:
    """POST the registration to the server; returns its JSON answer (exit 1 on non-2xx)."""
    import httpx  # the HTTP client loads only when a registration is posted

    base = api.rstrip("/")
    try:
        if manifest:
            body = {
                **fields,
                "image_sha256": [hashlib.sha256(p.read_bytes()).hexdigest() for p in files],
                "source_dir": str(files[0].parent.resolve()),
                "replace": replace,
                **({"captions": captions} if captions is not None else {}),
            }
            response = httpx.post(f"{base}/holders/manifest", json=body, timeout=60.0)
        else:
            parts = [
                ("images", (p.name, p.read_bytes(), _CONTENT_TYPES[p.suffix.lower()]))
                for p in files
            ]
            if captions is not None:
                parts.append(
                    ("captions", ("captions.json", json.dumps(captions).encode(), "application/json"))
                )
            data = {**fields, "replace": "true" if replace else "false"}
            response = httpx.post(f"{base}/holders", data=data, files=parts, timeout=60.0)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {base}: {exc}")
    if not response.is_success:
        try:
            detail = response.json().get("detail", response.text)
        except (ValueError, AttributeError):
            detail = response.text
        _fail(f"server answered {response.status_code}: {detail}")
    return response.json()


def register_holder_cmd(
    images: Annotated[Path, typer.Option("--images", help="Folder of PNG/JPEG images.")],
    name: Annotated[str, typer.Option("--name", help="Holder name (folder name).")],
    price_wei: Annotated[int, typer.Option("--price-wei", min=0, help="Reservation price, wei.")],
    keystore: Annotated[
        Path | None,
        typer.Option(help="Keystore file (or a folder with exactly one) of the holder key."),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(
            help="File with the keystore password (mode 600); default: $CCOMP_KEYSTORE_PASSWORD."
        ),
    ] = None,
    dev_index: Annotated[
        int | None, typer.Option(help="Sign with anvil dev account N (local demos only).")
    ] = None,
    api: Annotated[
        str | None, typer.Option(help="Oracle API base URL, e.g. http://127.0.0.1:8000.")
    ] = None,
    manifest: Annotated[
        bool,
        typer.Option(help="With --api: send hashes and the folder path, not the files."),
    ] = False,
    holders_dir: Annotated[
        Path | None, typer.Option(help="Register directly into this holders folder (no server).")
    ] = None,
    replace: Annotated[
        bool, typer.Option(help="Replace this address's existing registration.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Sign and register a holder's image folder with an oracle API or a holders folder."""
    try:
        if (api is None) == (holders_dir is None):
            raise ConfigError("give exactly one target: --api URL or --holders-dir PATH")
        if manifest and api is None:
            raise ConfigError("--manifest needs --api (the server reads the folder)")
        files = _image_files(images)
        key = private_key(keystore, password_file, dev_index)
        data = [(p.name, p.read_bytes()) for p in files]
        hashes = [hashlib.sha256(b).hexdigest() for _, b in data]
        captions = _captions_by_hash(images, files, hashes)
        fields = _signed_fields(key, name, price_wei, hashes, int(time.time()), replace, captions)
        if api is not None:
            result = _post(api, fields, files, manifest, replace, captions)
        else:
            assert holders_dir is not None
            stored = register_holder(
                holders_dir, Registration(**fields, captions=captions), data, allow_replace=replace
            )
            result = {
                "address": stored.address,
                "name": stored.name,
                "reservation_price_wei": str(stored.reservation_price_wei),
                "n_images": stored.n_images,
                "image_sha256": list(stored.image_sha256),
                "images_root": stored.images_root,
            }
    except OSError as exc:
        _fail(f"cannot read {exc.filename}: {exc.strerror}")
        return
    except OffchainError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"registered holder {result['name']}")
    table.add_column("field")
    table.add_column("value")
    for field in ("address", "name", "reservation_price_wei", "n_images", "images_root"):
        table.add_row(field, str(result.get(field)))
    console.print(table)
