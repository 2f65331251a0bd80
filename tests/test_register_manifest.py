"""Registration from a manifest of hashes plus a server-side folder, and the register-holder
command: a valid request is stored in the loader's layout; every bad one is a clear 4xx (or
exit 1) that leaves the holders folder unchanged."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time

import pytest
import typer
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from offchain.api.app import create_app
from offchain.api.registration import RegistrationLimits
from offchain.chain.anvil import DEFAULT_MNEMONIC, derive_private_keys
from offchain.cli.register import register_holder_cmd
from offchain.data.holders import load_holder_folders
from tests.test_registration import ALICE, MALLORY, corrupt_png, listing, png, sign

LIMITS = RegistrationLimits(max_images=4, max_image_bytes=4096, max_total_bytes=12 * 1024)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def body(account, images: list[bytes], source_dir, **kw) -> dict:
    return {
        **sign(account, images, **kw),
        "image_sha256": [sha(b) for b in images],
        "source_dir": str(source_dir),
    }


@pytest.fixture
def env(tmp_path):
    holders = tmp_path / "holders"
    holders.mkdir()
    allowed = tmp_path / "allowed"
    source = allowed / "alice"
    source.mkdir(parents=True)
    images = [png(1), png(2), png(3, fmt="JPEG")]
    for i, data in enumerate(images):
        (source / f"img{i}.{'jpg' if i == 2 else 'png'}").write_bytes(data)
    (source / "README.txt").write_text("not an image: ignored")
    api = TestClient(
        create_app(tmp_path / "run", holders, LIMITS, allowed_manifest_roots=[allowed])
    )
    return api, holders, source, images


def test_manifest_registration_is_read_back_by_the_loader_with_identical_hashes(env):
    api, holders, source, images = env
    response = api.post("/holders/manifest", json=body(ALICE, images, source))
    assert response.status_code == 201, response.text
    out = response.json()
    assert out["address"] == ALICE.address and out["n_images"] == 3
    assert out["image_sha256"] == sorted(sha(b) for b in images)
    (holder,) = load_holder_folders(holders, image_size=28)
    assert holder.name == "alice" and holder.address == ALICE.address
    stored = sorted(p.stem for p in (holders / "alice").iterdir() if p.suffix in (".png", ".jpg"))
    assert stored == out["image_sha256"]
    assert sorted(sha(p.read_bytes()) for p in (holders / "alice").glob("*.*g")) == stored


def test_manifest_registration_with_captions_by_hash_is_signed_and_stored(env):
    api, holders, source, images = env
    captions = ["one", "two", "three"]
    request = {
        **body(ALICE, images, source, captions=captions),
        "captions": {sha(b): c for b, c in zip(images, captions, strict=True)},
    }
    response = api.post("/holders/manifest", json=request)
    assert response.status_code == 201, response.text
    (holder,) = load_holder_folders(holders, image_size=28)
    by_hash = {sha(b): c for b, c in zip(images, captions, strict=True)}
    assert list(holder.captions) == [by_hash[h] for h in sorted(by_hash)]


@pytest.mark.parametrize(
    "captions, signed, status, needle",
    [
        ({"img0.png": "one"}, ["one", "two", "three"], 422, "names no image"),
        ("not an object", ["one", "two", "three"], 422, "dict"),
        (["one", "two", "three"], ["one", "two", "three"], 422, "dict"),
        ({0: "one"}, ["one", "two", "three"], 422, "names no image"),
        (None, ["one", "two", "three"], 403, "does not sign"),
        ("by hash", None, 403, "does not sign"),
        ("by hash", ["one", "two", "3"], 403, "does not sign"),
        ("first empty", ["", "two", "three"], 422, "is empty"),
    ],
    ids=["file name key", "string", "list", "int key", "unsent", "unsigned", "other", "empty"],
)
def test_bad_manifest_captions_are_refused_and_change_nothing(env, captions, signed, status, needle):
    api, holders, source, images = env
    before = listing(holders)
    by_hash = {sha(b): c for b, c in zip(images, ["one", "two", "three"], strict=True)}
    if captions == "by hash":
        captions = by_hash
    elif captions == "first empty":
        captions = {**by_hash, sha(images[0]): ""}
    request = {**body(ALICE, images, source, captions=signed), "captions": captions}
    response = api.post("/holders/manifest", json=request)
    assert response.status_code == status, response.text
    assert needle in json.dumps(response.json()["detail"]), response.json()["detail"]
    assert listing(holders) == before


def _escape_link(tmp_path, source):
    outside = tmp_path / "outside"
    outside.mkdir()
    for p in source.iterdir():
        (outside / p.name).write_bytes(p.read_bytes())
    link = source.parent / "link"
    link.symlink_to(outside, target_is_directory=True)
    return link


def _file_link(tmp_path, source):
    outside = tmp_path / "secret.png"
    target = source / "img0.png"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(outside)
    return source


def _add(source, name, data, images):
    (source / name).write_bytes(data)
    return [*images, data], source


def _remove(source, name, images):
    (source / name).unlink()
    return images, source


def _misnamed(source, images):
    """A file named for the first image's hash, holding other bytes."""
    (source / "img0.png").unlink()
    (source / f"{sha(images[0])}.png").write_bytes(png(8))
    return images, source


CASES = {
    # name: (prepare(tmp_path, source, images) -> (images signed, source_dir), status, needle)
    "outside allowed roots": (lambda t, s, im: (im, t / "holders"), 403, "not inside an allowed"),
    "dotdot escape": (lambda t, s, im: (im, f"{s}/../../holders"), 403, "not inside an allowed"),
    "symlinked folder escape": (
        lambda t, s, im: (im, _escape_link(t, s)),
        403,
        "not inside an allowed",
    ),
    "symlinked file escape": (lambda t, s, im: (im, _file_link(t, s)), 403, "links to"),
    "relative source_dir": (lambda t, s, im: (im, "allowed/alice"), 422, "absolute"),
    "missing folder": (lambda t, s, im: (im, s.parent / "nobody"), 422, "not an existing folder"),
    "hash mismatch": (lambda t, s, im: _misnamed(s, im), 422, "hash mismatch"),
    "missing file": (lambda t, s, im: _remove(s, "img0.png", im), 422, "missing"),
    "extra file": (lambda t, s, im: (im[:2], s), 422, "is not in the manifest"),
    "oversize file": (
        lambda t, s, im: _add(s, "big.png", png(7, (200, 200)), im),
        413,
        "max_image_bytes",
    ),
    "corrupt image": (lambda t, s, im: _add(s, "bad.png", corrupt_png(), im), 422, "corrupt"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_source_is_a_clear_4xx_and_changes_nothing(env, tmp_path, case):
    api, holders, source, images = env
    existing = [png(100)]
    (tmp_path / "allowed" / "mallory").mkdir()
    (tmp_path / "allowed" / "mallory" / "m.png").write_bytes(existing[0])
    response = api.post(
        "/holders/manifest",
        json=body(MALLORY, existing, tmp_path / "allowed" / "mallory", name="mallory"),
    )
    assert response.status_code == 201, response.text
    before = listing(holders)

    prepare, status, needle = CASES[case]
    signed, source_dir = prepare(tmp_path, source, images)
    response = api.post("/holders/manifest", json=body(ALICE, signed, source_dir))
    assert response.status_code == status, response.text
    assert needle in response.json()["detail"], response.json()["detail"]
    assert listing(holders) == before


@pytest.mark.parametrize(
    "mutate, status, needle",
    [
        (
            lambda d, im: {**d, "signature": sign(MALLORY, im, address=ALICE.address)["signature"]},
            403,
            f"not by {ALICE.address}",
        ),
        (
            lambda d, im: {**d, "signature": sign(ALICE, [png(7)])["signature"]},
            403,
            "does not sign",
        ),
        (lambda d, im: {**d, "image_sha256": ["zz"]}, 422, "not a hex SHA-256"),
        (lambda d, im: {**d, "image_sha256": [sha(im[0])] * 2}, 422, "listed twice"),
        (lambda d, im: {**d, "reservation_price_wei": 5}, 422, "string"),
    ],
    ids=["another key", "another image set", "bad hash", "repeated hash", "price not a string"],
)
def test_bad_signature_or_manifest_is_refused_before_reading_files(env, mutate, status, needle):
    api, holders, source, images = env
    before = listing(holders)
    response = api.post("/holders/manifest", json=mutate(body(ALICE, images, source), images))
    assert response.status_code == status, response.text
    assert needle in json.dumps(response.json()["detail"])
    assert listing(holders) == before


def test_manifest_route_disabled_without_allowed_roots_or_holders_folder(tmp_path, env):
    _, _, source, images = env
    holders = tmp_path / "holders"
    before = listing(holders)
    for api in (
        TestClient(create_app(tmp_path, holders, LIMITS)),
        TestClient(create_app(tmp_path)),
    ):
        response = api.post("/holders/manifest", json=body(ALICE, images, source))
        assert response.status_code == 503 and "disabled" in response.json()["detail"]
    assert listing(holders) == before


# ---------------------------------------------------------------------------------------------
# register-holder command
# ---------------------------------------------------------------------------------------------

cli = typer.Typer()
cli.command("register-holder")(register_holder_cmd)
cli.command("noop")(lambda: None)  # two commands: the first argument names the command


def flat(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


DEV3 = derive_private_keys(DEFAULT_MNEMONIC, 4)[3]


def test_cli_registers_into_a_holders_folder_with_a_dev_key(env, tmp_path):
    _, holders, source, images = env
    args = ["register-holder", "--images", str(source), "--name", "bob", "--price-wei", "7"]
    result = CliRunner().invoke(
        cli, [*args, "--dev-index", "3", "--holders-dir", str(holders), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    from eth_account import Account

    assert out["address"] == Account.from_key(DEV3).address and out["n_images"] == 3
    (holder,) = load_holder_folders(holders)
    assert holder.name == "bob" and holder.reservation_price_wei == 7
    again = CliRunner().invoke(cli, [*args, "--dev-index", "3", "--holders-dir", str(holders)])
    assert again.exit_code == 1 and "registered as 'bob'" in flat(again)


def test_cli_needs_exactly_one_key_source_and_target(env):
    _, holders, source, _ = env
    args = ["register-holder", "--images", str(source), "--name", "bob", "--price-wei", "0"]
    result = CliRunner().invoke(cli, [*args, "--holders-dir", str(holders)])
    assert result.exit_code == 1 and "exactly one key source" in flat(result)
    result = CliRunner().invoke(cli, [*args, "--dev-index", "1"])
    assert result.exit_code == 1 and "exactly one target" in flat(result)


@pytest.fixture
def server(tmp_path, env):
    _, holders, _, _ = env
    app = create_app(
        tmp_path / "run", holders, LIMITS, allowed_manifest_roots=[tmp_path / "allowed"]
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_cli_uploads_and_sends_manifests_to_the_api(env, server, tmp_path):
    _, holders, source, images = env
    args = ["register-holder", "--images", str(source), "--price-wei", "9", "--api", server]
    result = CliRunner().invoke(cli, [*args, "--name", "carol", "--dev-index", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["image_sha256"] == sorted(sha(b) for b in images)

    # the same address again: the server's 409 detail, exit 1, nothing changed
    before = listing(holders)
    result = CliRunner().invoke(cli, [*args, "--name", "carol2", "--dev-index", "4"])
    assert result.exit_code == 1 and "409" in flat(result) and "registered as" in flat(result)
    assert listing(holders) == before

    # a manifest with --replace: the server reads the folder itself; its issued_at (seconds)
    # must be newer than the stored registration's, so start the next second
    time.sleep(1.01 - time.time() % 1)
    result = CliRunner().invoke(
        cli, [*args, "--name", "carol3", "--dev-index", "4", "--manifest", "--replace"]
    )
    assert result.exit_code == 0, result.output
    assert "carol3" in result.output
    assert [h.name for h in load_holder_folders(holders)] == ["carol3"]


def test_cli_signs_with_a_keystore_and_env_password(env, monkeypatch, tmp_path):
    from offchain.oracle import keystore

    monkeypatch.setattr(keystore, "KDF", "pbkdf2")
    monkeypatch.setattr(keystore, "KDF_ITERATIONS", 2)
    monkeypatch.setenv(keystore.PASSWORD_ENV, "a-strong-passphrase-42")
    address = keystore.create_keystore(
        tmp_path / "keys", "a-strong-passphrase-42", "0x" + "11" * 32
    )
    _, holders, source, _ = env
    args = ["register-holder", "--images", str(source), "--name", "dave", "--price-wei", "1"]
    result = CliRunner().invoke(
        cli, [*args, "--keystore", str(tmp_path / "keys"), "--holders-dir", str(holders)]
    )
    assert result.exit_code == 0, result.output
    assert "dave" in result.output and address == ALICE.address
    assert load_holder_folders(holders)[0].address == address
    monkeypatch.setenv(keystore.PASSWORD_ENV, "another-strong-passphrase")
    result = CliRunner().invoke(
        cli, [*args, "--keystore", str(tmp_path / "keys"), "--holders-dir", str(holders)]
    )
    assert result.exit_code == 1 and "wrong keystore password" in flat(result)


def test_cli_sends_the_folders_captions_and_the_loader_reads_them_back(env, server, tmp_path):
    _, holders, source, images = env
    (source / "captions.json").write_text(json.dumps({"img0.png": "red apple", "img1.png": "cat"}))
    (source / "img2.txt").write_text("blue whale\n")  # a sidecar caption for img2.jpg
    args = ["register-holder", "--images", str(source), "--price-wei", "9"]

    direct = tmp_path / "direct"
    result = CliRunner().invoke(
        cli, [*args, "--name", "dora", "--dev-index", "3", "--holders-dir", str(direct)]
    )
    assert result.exit_code == 0, result.output
    (holder,) = load_holder_folders(direct, channels=3)
    by_hash = dict(zip(sorted(sha(b) for b in images), holder.captions, strict=True))
    assert by_hash[sha(images[0])] == "red apple" and by_hash[sha(images[2])] == "blue whale"

    result = CliRunner().invoke(cli, [*args, "--name", "erin", "--dev-index", "4", "--api", server])
    assert result.exit_code == 0, result.output
    time.sleep(1.01 - time.time() % 1)
    result = CliRunner().invoke(cli, [*args, "--name", "fay", "--dev-index", "5", "--api", server,
                                      "--manifest"])
    assert result.exit_code == 0, result.output
    loaded = {h.name: h for h in load_holder_folders(holders, channels=3)}
    assert sorted(loaded["erin"].captions) == sorted(loaded["fay"].captions) == [
        "blue whale", "cat", "red apple"
    ]

    (source / "img2.txt").unlink()  # one image without a caption: refused before sending
    result = CliRunner().invoke(cli, [*args, "--name", "gus", "--dev-index", "6", "--api", server])
    assert result.exit_code == 1 and "no caption" in flat(result) and "img2.txt" in flat(result)
