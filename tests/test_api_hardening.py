"""The service items of issue 13, found by attacking the node: request bodies that crash the
process, registration replays, a crash in the middle of a replacement, unreadable holder folders,
demo-derived keys, decoding cost, and what the public listing and error texts reveal. Every
refusal is a clear 4xx naming the problem and changes nothing."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi.testclient import TestClient

from offchain.api.app import create_app
from offchain.api.registration import MESSAGE_HEADER, RegistrationLimits, images_root
from offchain.data.holders import holder_address, holder_private_key, load_holder_folders
from offchain.errors import ConfigError
from tests.oracle_procs import ROOT, child_env, served
from tests.test_registration import (
    ALICE,
    LIMITS,
    MALLORY,
    files,
    listing,
    png,
    sign,
)

DEEP = b"[" * 80_000 + b"]" * 80_000
"""160 KB of JSON nested 80,000 deep: a SIGSEGV in ``json.loads`` under py_ecc's recursion
limit of 100,000."""
DEEP_SMALL = b"[" * 32_000 + b"]" * 32_000
"""64,000 bytes nested 32,000 deep: under the 64 KiB body limit, so the depth check answers."""


@pytest.fixture
def client(tmp_path):
    holders = tmp_path / "holders"
    holders.mkdir()
    return TestClient(create_app(tmp_path / "run", holders, LIMITS)), holders


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------ 1. bodies that crashed the process


def _post(base: str, path: str, body: bytes, headers: dict[str, str] | None = None):
    return httpx.post(
        base + path,
        content=body,
        headers={"content-type": "application/json", **(headers or {})},
        timeout=30,
    )


def _headers_only(base: str, path: str, length: int, headers: dict[str, str]) -> int:
    """Status of a POST that declares ``length`` bytes and sends none of them."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.putrequest("POST", path)
        for key, value in {"Content-Length": str(length), **headers}.items():
            conn.putheader(key, value)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_deep_and_large_bodies_get_4xx_and_a_real_server_stays_alive(tmp_path):
    """``python -m offchain serve`` (a real uvicorn process): a body nested 80,000 deep used to
    kill it with SIGSEGV on the co-signing and operator routes (parsed before the token was
    checked); now each route answers 401/413/422 and the process keeps serving."""
    run_dir, holders, allowed = tmp_path / "run", tmp_path / "holders", tmp_path / "allowed"
    for folder in (run_dir, holders, allowed):
        folder.mkdir()
    token = secrets.token_urlsafe(32)
    env_file = tmp_path / "node.env"
    env_file.write_text(f"CCOMP_API_TOKEN={token}\n")
    auth = {"Authorization": f"Bearer {token}"}
    args = ("--config", str(env_file), "--holders-dir", str(holders))
    with served(run_dir, tmp_path / "server.log", *args, "--manifest-root", str(allowed)) as base:
        deeper = "nested deeper than 64 levels"
        cases = [
            ("/rounds/1/signatures", DEEP, {}, 413, "exceeds 65536 bytes"),
            ("/rounds/1/signatures", DEEP_SMALL, {}, 422, deeper),
            ("/operator/rounds/run", DEEP, {}, 401, "bearer token"),
            ("/operator/rounds/run", DEEP, auth, 413, "exceeds 65536 bytes"),
            ("/operator/rounds/run", DEEP_SMALL, auth, 422, deeper),
            ("/holders/manifest", DEEP, {}, 422, deeper),
        ]
        for path, body, headers, status, needle in cases:
            response = _post(base, path, body, headers)
            assert (response.status_code, path) == (status, path), response.text
            assert needle in response.json()["detail"]
            assert httpx.get(base + "/health", timeout=10).status_code == 200

        # over the size limit: refused from Content-Length, or counted when sent chunked
        big = b'{"signature": "' + b"a" * (1 << 20) + b'"}'
        response = _post(base, "/rounds/1/signatures", big)
        assert response.status_code == 413 and "65536 bytes" in response.json()["detail"]
        response = _post(base, "/rounds/1/signatures", iter([big[:70_000], big[70_000:]]))
        assert response.status_code == 413 and "stopped reading" in response.json()["detail"]
        # the token is checked before the body is read: no body needs to arrive for a 401
        assert _headers_only(base, "/operator/rounds/run", 10**7, {}) == 401
        assert _headers_only(base, "/operator/rounds/run", 10**7, auth) == 413
        # a normal request still works
        assert _post(base, "/rounds/1/signatures", b'{"signature": "0x00"}').status_code == 404
        assert httpx.get(base + "/health", timeout=10).status_code == 200
    assert "Segmentation" not in (tmp_path / "server.log").read_text()


# ------------------------------------------------ 3. registration replay


def test_a_signed_registration_cannot_be_resent_as_a_replacement(client):
    api, holders = client
    now = int(time.time())
    first = [png(1)]
    signed_first = sign(ALICE, first, price=5, issued_at=now - 100)
    assert api.post("/holders", data=signed_first, files=files(first)).status_code == 201
    newer = [png(2), png(3)]
    data = sign(ALICE, newer, price=9, issued_at=now - 50, replace=True)
    assert api.post("/holders", data=data, files=files(newer)).status_code == 201
    before = listing(holders)

    # the first registration (signed without replace) re-sent with replace=true
    response = api.post("/holders", data={**signed_first, "replace": "true"}, files=files(first))
    assert response.status_code == 403 and "replace" in response.json()["detail"]
    # a v1 signature (no replace line) is refused too
    v1 = "\n".join(
        [
            "offchain holder registration v1",
            f"address: {ALICE.address}",
            "name: alice",
            "reservation_price_wei: 5",
            "images: 1",
            f"images_root: 0x{images_root([sha(first[0])])}",
            f"issued_at: {now - 10}",
        ]
    )
    v1_sig = ALICE.sign_message(encode_defunct(text=v1)).signature.hex()
    data = {**sign(ALICE, first, price=5, issued_at=now - 10), "signature": "0x" + v1_sig}
    response = api.post("/holders", data={**data, "replace": "true"}, files=files(first))
    assert response.status_code == 403 and MESSAGE_HEADER.endswith("v2")
    assert listing(holders) == before
    (holder,) = load_holder_folders(holders)
    assert (holder.n_images, holder.reservation_price_wei) == (2, 9)


def test_an_earlier_replacement_cannot_roll_a_holder_back(client):
    api, holders = client
    now = int(time.time())
    images = {k: [png(10 + k)] * 1 for k in range(3)}
    data = sign(ALICE, images[0], price=1, issued_at=now - 200)
    assert api.post("/holders", data=data, files=files(images[0])).status_code == 201
    old = sign(ALICE, images[1], price=2, issued_at=now - 100, replace=True)
    assert api.post("/holders", data=old, files=files(images[1])).status_code == 201
    new = sign(ALICE, images[2], price=3, issued_at=now - 50, replace=True)
    assert api.post("/holders", data=new, files=files(images[2])).status_code == 201
    before = listing(holders)

    for replay, imgs in ((old, images[1]), (new, images[2])):  # older, and the same again
        response = api.post("/holders", data=replay, files=files(imgs))
        assert response.status_code == 409, response.text
        assert "not newer than issued_at" in response.json()["detail"]
    assert listing(holders) == before
    assert load_holder_folders(holders)[0].reservation_price_wei == 3


# ------------------------------------------------ 6. a crash between the renames

_CRASH = """
import json, sys
from pathlib import Path
from offchain.api.registration import Registration, RegistrationLimits, register_holder
from offchain.config import get_settings
get_settings()  # arms the fault point of CCOMP_FAULT_KILL, as every entry point does
a = json.loads(sys.argv[1])
register_holder(
    Path(a["holders"]), Registration(**a["fields"]),
    [(n, bytes.fromhex(h)) for n, h in a["images"]], RegistrationLimits(**a["limits"]),
    allow_replace=True,
)
"""


def _leftovers(holders: Path) -> list[str]:
    return sorted(
        p.name for p in holders.iterdir() if p.name.startswith((".old-", ".tmp-", ".rep"))
    )


@pytest.mark.parametrize(
    ("point", "survivor", "n_images"),
    [("register:aside", "alice", 1), ("register:published", "alice2", 2)],
)
def test_a_crash_during_a_replacement_is_recovered_at_start_up(tmp_path, point, survivor, n_images):
    """SIGKILL after the old folder is moved aside (the holder vanished) or after the new one
    is published; the next start-up restores the old registration or finishes the new one."""
    holders = tmp_path / "holders"
    holders.mkdir()
    api = TestClient(create_app(tmp_path / "run", holders, LIMITS))
    first = [png(1)]
    data = sign(ALICE, first, issued_at=int(time.time()) - 60)
    assert api.post("/holders", data=data, files=files(first)).status_code == 201

    second = [png(2), png(3)]
    fields = {k: v for k, v in sign(ALICE, second, name="alice2", replace=True).items()}
    fields.pop("replace")
    limits = {"max_images": 4, "max_image_bytes": 4096, "max_total_bytes": 12 * 1024}
    payload = {
        "holders": str(holders),
        "fields": fields,
        "images": [(f"i{i}.png", b.hex()) for i, b in enumerate(second)],
        "limits": limits,
    }
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASH, json.dumps(payload)],
        cwd=ROOT,
        env=child_env(CCOMP_FAULT_KILL=point),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert _leftovers(holders)  # the crash left the replacement half done

    api = TestClient(create_app(tmp_path / "run", holders, LIMITS))  # the restart
    listed = api.get("/holders").json()
    assert [(h["name"], h["n_images"]) for h in listed] == [(survivor, n_images)]
    assert [h.address for h in load_holder_folders(holders)] == [ALICE.address]
    assert _leftovers(holders) == []


def test_start_up_restores_an_orphaned_backup_and_removes_only_its_own_leftovers(tmp_path):
    """What the previous version left after a crash (a holder moved aside, no journal) comes
    back; an unfinished registration folder with the service's marker is removed, a foreign
    folder with the same prefix is left alone."""
    holders = tmp_path / "holders"
    holders.mkdir()
    api = TestClient(create_app(tmp_path / "run", holders, LIMITS))
    images = [png(1)]
    data = sign(ALICE, images, issued_at=int(time.time()) - 60)
    assert api.post("/holders", data=data, files=files(images)).status_code == 201
    (holders / "alice").rename(holders / f".old-alice-{os.getpid()}-{time.time_ns()}")
    ours = holders / ".tmp-register-abc123"
    ours.mkdir()
    (ours / ".registration.json").write_text("{}")
    (ours / "x.png").write_bytes(png(4))
    foreign = holders / ".tmp-register-operator-notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not the service's")
    assert api.get("/holders").json() == []

    api = TestClient(create_app(tmp_path / "run", holders, LIMITS))
    assert [h["name"] for h in api.get("/holders").json()] == ["alice"]
    assert not ours.exists() and (foreign / "notes.txt").is_file()
    assert _leftovers(holders) == [foreign.name]


# ------------------------------------------------ 7. unreadable holder folders, NUL bytes


def test_an_unreadable_holder_json_blocks_only_its_own_name(client):
    api, holders = client
    images = [png(1)]
    data = sign(ALICE, images, issued_at=int(time.time()) - 60)
    assert api.post("/holders", data=data, files=files(images)).status_code == 201
    for name, text in (("bob", "{not json"), ("carol", "[1, 2]"), ("dan", '{"address": 5}')):
        (holders / name).mkdir()
        (holders / name / "holder.json").write_text(text)
        (holders / name / "a.png").write_bytes(png(7))
    before = listing(holders)

    response = api.get("/holders")
    assert response.status_code == 200 and [h["name"] for h in response.json()] == ["alice"]
    assert api.get("/metrics").status_code == 200
    response = api.post("/holders", data=sign(MALLORY, [png(2)], name="bob"), files=files([png(2)]))
    assert response.status_code == 409
    assert "'bob'" in response.json()["detail"] and "not valid JSON" in response.json()["detail"]
    assert listing(holders) == before
    # another holder registers normally
    response = api.post("/holders", data=sign(MALLORY, [png(2)], name="eve"), files=files([png(2)]))
    assert response.status_code == 201, response.text


def test_a_nul_byte_in_source_dir_is_a_422(tmp_path):
    holders, allowed = tmp_path / "holders", tmp_path / "allowed"
    allowed.mkdir()
    api = TestClient(
        create_app(tmp_path / "run", holders, LIMITS, allowed_manifest_roots=[allowed])
    )
    images = [png(1)]
    body = {**sign(ALICE, images), "image_sha256": [sha(images[0])]}
    response = api.post("/holders/manifest", json={**body, "source_dir": f"{allowed}/a\x00b"})
    assert response.status_code == 422 and "NUL byte" in response.json()["detail"]
    assert not holders.exists() or list(holders.iterdir()) in ([], [holders / ".registration.lock"])


def test_an_unusable_holders_folder_or_root_is_a_clear_start_up_error(tmp_path):
    (tmp_path / "holders").write_text("a file")
    with pytest.raises(ConfigError, match="is not a folder"):
        create_app(tmp_path / "run", tmp_path / "holders")
    with pytest.raises(ConfigError, match="manifest-root"):
        create_app(tmp_path / "run", allowed_manifest_roots=[Path("/tmp/a\x00b")])


# ------------------------------------------------ 8. demo-derived keys


def test_demo_keys_never_change_holders_through_the_service(client):
    api, holders = client
    (holders / "holder_0").mkdir()  # a demo/CLI holder folder: no holder.json
    (holders / "holder_0" / "a.png").write_bytes(png(1))
    before = listing(holders)
    demo = Account.from_key(holder_private_key("holder_0"))
    assert demo.address == holder_address("holder_0")
    images = [png(5)]

    cases = [
        (demo, "holder_0", True, 403, "demo-derived address of holder name 'holder_0'"),
        (demo, "evil", False, 403, "demo-derived address of holder name 'holder_0'"),
        (Account.from_key(holder_private_key("zed")), "zed", False, 403, "demo-derived"),
        (ALICE, "holder_0", False, 409, "no address in holder.json"),
    ]
    for account, name, replace, status, needle in cases:
        data = sign(account, images, name=name, replace=replace)
        response = api.post("/holders", data=data, files=files(images))
        assert (name, response.status_code) == (name, status), response.text
        assert needle in response.json()["detail"]
    assert listing(holders) == before
    assert api.get("/holders").json()[0]["address"] == demo.address  # still listed as paid


# ------------------------------------------------ 9. decoding cost


def test_the_pixel_budget_is_checked_from_headers_before_any_decoding(client):
    api, holders = client
    before = listing(holders)
    api.app.state.registration_limits = RegistrationLimits(
        max_images=4, max_image_bytes=8192, max_total_bytes=20_000, max_total_pixels=2 * 64 * 64 - 1
    )
    # the first image is corrupt: decoding it would answer 422; the header pass answers first
    images = [truncated_png_of((64, 64)), png(2, size=(64, 64))]
    response = api.post("/holders", data=sign(ALICE, images), files=files(images))
    assert response.status_code == 413, response.text
    assert "max_total_pixels 8191" in response.json()["detail"]
    # within the budget, the corrupt image is found by decoding
    api.app.state.registration_limits = RegistrationLimits(
        max_images=4, max_image_bytes=8192, max_total_bytes=20_000
    )
    response = api.post("/holders", data=sign(ALICE, images), files=files(images))
    assert response.status_code == 422 and "img0.png" in response.json()["detail"]
    # and an unauthenticated request never gets that far
    response = api.post(
        "/holders", data=sign(MALLORY, images, address=ALICE.address), files=files(images)
    )
    assert response.status_code == 403
    assert listing(holders) == before


def truncated_png_of(size: tuple[int, int]) -> bytes:
    return png(9, size=size)[:-40]


# ------------------------------------------------ 11. what errors and listings reveal


def test_decode_errors_name_the_file_and_listings_keep_prices_private(client):
    api, _ = client
    junk = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # PNG magic, no image after it
    response = api.post("/holders", data=sign(ALICE, [junk]), files=files([junk], ["scan.png"]))
    detail = response.json()["detail"]
    assert response.status_code == 422 and "'scan.png'" in detail, detail
    assert "BytesIO" not in detail and " at 0x" not in detail

    images = [png(1)]
    response = api.post("/holders", data=sign(ALICE, images, price=7), files=files(images))
    assert response.status_code == 201 and response.json()["reservation_price_wei"] == "7"
    (listed,) = api.get("/holders").json()
    assert "reservation_price_wei" not in listed and listed["name"] == "alice"
    schema = api.get("/openapi.json").json()["components"]["schemas"]["RegisteredHolderOut"]
    assert "reservation_price_wei" not in schema["properties"]


def test_a_content_length_of_non_ascii_digits_is_not_trusted() -> None:
    """Latin-1 '²' passes ``str.isdigit`` but not ``int``: the guard must not crash on it."""
    from offchain.api.guard import _declared_length

    assert _declared_length({"headers": [(b"content-length", "²".encode("latin-1"))]}) is None
    assert _declared_length({"headers": [(b"content-length", b"42")]}) == 42
