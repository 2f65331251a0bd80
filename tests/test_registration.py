"""Holder registration over HTTP: a signed image set is stored in the loader's layout; every bad
input is a clear 4xx that leaves the holders folder unchanged."""

from __future__ import annotations

import hashlib
import io
import json
import time

import numpy as np
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi.testclient import TestClient
from PIL import Image

from offchain.api.app import create_app
from offchain.api.registration import RegistrationLimits, registration_message
from offchain.data.holders import _read_image, image_hash, load_holder_folders

ALICE = Account.from_key("0x" + "11" * 32)
MALLORY = Account.from_key("0x" + "22" * 32)
LIMITS = RegistrationLimits(max_images=4, max_image_bytes=4096, max_total_bytes=12 * 1024)


def png(seed: int, size: tuple[int, int] = (28, 28), fmt: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format=fmt)
    return buffer.getvalue()


def sign(
    account,
    images: list[bytes],
    *,
    name: str = "alice",
    price: int = 10**18,
    issued_at: int | None = None,
    address: str | None = None,
    replace: bool = False,
) -> dict[str, str]:
    """The form fields of a registration signed by ``account`` (with ``replace=true`` when
    ``replace``: the v2 message covers it)."""
    issued_at = int(time.time()) if issued_at is None else issued_at
    address = address or account.address
    hashes = [hashlib.sha256(b).hexdigest() for b in images]
    message = registration_message(address, name, price, hashes, issued_at, replace=replace)
    signature = account.sign_message(encode_defunct(text=message)).signature.hex()
    fields = {
        "address": address,
        "name": name,
        "reservation_price_wei": str(price),
        "signature": "0x" + signature.removeprefix("0x"),
        "issued_at": str(issued_at),
    }
    return {**fields, "replace": "true"} if replace else fields


def files(images: list[bytes], names: list[str] | None = None) -> list[tuple]:
    names = names or [f"img{i}.png" for i in range(len(images))]
    return [("images", (n, b, "image/png")) for n, b in zip(names, images, strict=True)]


def listing(root) -> list[tuple[str, int]]:
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1)
        for p in root.rglob("*")
        if p.name != ".registration.lock"
    )


@pytest.fixture
def client(tmp_path):
    holders = tmp_path / "holders"
    holders.mkdir()
    return TestClient(create_app(tmp_path / "run", holders, LIMITS)), holders


def test_valid_registration_is_read_back_by_the_loader_with_identical_hashes(client, tmp_path):
    api, holders = client
    images = [png(1), png(2), png(3, fmt="JPEG")]
    response = api.post("/holders", data=sign(ALICE, images), files=files(images))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["address"] == ALICE.address and body["name"] == "alice"
    assert body["n_images"] == 3 and body["reservation_price_wei"] == str(10**18)
    assert body["image_sha256"] == sorted(hashlib.sha256(b).hexdigest() for b in images)
    assert body["images_root"].startswith("0x") and len(body["images_root"]) == 66

    stored = json.loads((holders / "alice" / "holder.json").read_text())
    assert stored["reservation_price_wei"] == str(10**18)  # issue 13, item 12: exact in JS
    (holder,) = load_holder_folders(holders, image_size=28)
    assert holder.name == "alice" and holder.address == ALICE.address
    assert holder.reservation_price_wei == 10**18
    expected = []
    for i, data in enumerate(images):  # the loader reads files sorted by name = by sha256
        path = tmp_path / f"orig{i}"
        path.write_bytes(data)
        expected.append((hashlib.sha256(data).hexdigest(), image_hash(_read_image(path, 28, 28))))
    assert list(holder.image_hashes) == [h for _, h in sorted(expected)]

    listed = api.get("/holders").json()  # reservation prices stay private
    assert listed == [{"address": ALICE.address, "name": "alice", "n_images": 3}]


def test_lowercase_address_and_replace_of_own_registration(client):
    api, holders = client
    first = [png(1)]
    data = sign(ALICE, first, address=ALICE.address.lower(), issued_at=int(time.time()) - 5)
    assert api.post("/holders", data=data, files=files(first)).status_code == 201
    second = [png(5), png(6)]
    data = sign(ALICE, second, name="alice2", replace=True)
    response = api.post("/holders", data=data, files=files(second))
    assert response.status_code == 201, response.text
    assert [h.name for h in load_holder_folders(holders)] == ["alice2"]
    assert load_holder_folders(holders)[0].n_images == 2


def corrupt_png() -> bytes:
    data = bytearray(png(9))
    data[40:60] = b"\x00" * 20
    return bytes(data)


def truncated_png() -> bytes:
    return png(9)[:-40]


def _cases():
    now = int(time.time())
    good = [png(1), png(2)]
    cases = {
        "corrupt png": ([png(1), corrupt_png()], None, 422, "corrupt"),
        "truncated png": ([truncated_png()], None, 422, "corrupt"),
        "text named .png": ([b"hello, I am not an image" * 4], None, 422, "neither PNG nor JPEG"),
        "oversized image": ([png(1, size=(200, 200))], None, 413, "max_image_bytes"),
        "too small image": ([png(1, size=(4, 4))], None, 422, "min_side_px"),
        "too many images": ([png(i) for i in range(5)], None, 422, "max_images"),
        "zero images": ([], None, 422, "no images"),
        "duplicate image": ([png(1), png(1)], None, 422, "same file"),
        "bad address": (good, lambda d: {**d, "address": "0x1234"}, 422, "not a 20-byte"),
        "bad checksum": (
            good,
            lambda d: {**d, "address": d["address"][:2] + d["address"][2:].swapcase()},
            422,
            "checksum",
        ),
        "bad name": (good, lambda d: {**d, "name": "../evil"}, 422, "name"),
        "bad price": (good, lambda d: {**d, "reservation_price_wei": "-5"}, 422, "reservation"),
        "malformed signature": (good, lambda d: {**d, "signature": "0xzz"}, 422, "signature"),
        "missing field": (
            good,
            lambda d: {k: v for k, v in d.items() if k != "name"},
            422,
            "missing fields",
        ),
        "signature by another key": (
            good,
            lambda d: {**sign(MALLORY, good, address=ALICE.address)},
            403,
            f"not by {ALICE.address}",
        ),
        "signature over another image set": (
            good,
            lambda d: {**d, "signature": sign(ALICE, [png(7), png(8)])["signature"]},
            403,
            "does not sign this registration",
        ),
        "signature for another price": (
            good,
            lambda d: {**d, "reservation_price_wei": "1"},
            403,
            "does not sign",
        ),
        "expired issued_at": (
            good,
            lambda d: sign(ALICE, good, issued_at=now - 3600),
            403,
            "expired",
        ),
        "future issued_at": (
            good,
            lambda d: sign(ALICE, good, issued_at=now + 3600),
            403,
            "future",
        ),
    }
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_a_clear_4xx_and_changes_nothing(client, case):
    api, holders = client
    # an existing registration, to show that nothing of it changes either
    existing = [png(100)]
    assert (
        api.post(
            "/holders", data=sign(MALLORY, existing, name="mallory"), files=files(existing)
        ).status_code
        == 201
    )
    before = listing(holders)

    images, mutate, status, needle = CASES[case]
    data = sign(ALICE, images)
    if mutate is not None:
        data = mutate(data)
    response = api.post("/holders", data=data, files=files(images))
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert needle in detail, detail
    assert listing(holders) == before


def test_duplicate_registration_is_409_and_changes_nothing(client):
    api, holders = client
    images = [png(1)]
    assert api.post("/holders", data=sign(ALICE, images), files=files(images)).status_code == 201
    before = listing(holders)
    again = [png(2)]
    response = api.post("/holders", data=sign(ALICE, again, name="other"), files=files(again))
    assert response.status_code == 409 and "registered as 'alice'" in response.json()["detail"]
    # another address may not take the name either, even when asking to replace
    data = sign(MALLORY, again, name="alice", replace=True)
    response = api.post("/holders", data=data, files=files(again))
    assert response.status_code == 409 and "name 'alice'" in response.json()["detail"]
    assert listing(holders) == before


def test_total_upload_limit_stops_reading_with_413(client):
    api, holders = client
    before = listing(holders)
    images = [png(i, size=(40, 40)) for i in range(3)]
    limits = RegistrationLimits(max_images=4, max_image_bytes=4096, max_total_bytes=3000)
    api.app.state.registration_limits = limits
    blob = [("images", ("big.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (200 * 1024), "image/png"))]
    response = api.post("/holders", data=sign(ALICE, images), files=blob)
    assert response.status_code == 413 and "max_total_bytes" in response.json()["detail"]
    response = api.post("/holders", data=sign(ALICE, images), files=files(images))
    assert response.status_code == 413 and "max_total_bytes 3000" in response.json()["detail"]
    assert listing(holders) == before


def test_registration_disabled_without_holders_folder(tmp_path):
    api = TestClient(create_app(tmp_path))
    assert api.get("/holders").status_code == 503
    response = api.post("/holders", data={"address": ALICE.address})
    assert response.status_code == 503 and "registration disabled" in response.json()["detail"]


def test_non_multipart_body_is_415(client):
    api, _ = client
    assert api.post("/holders", json={"address": ALICE.address}).status_code == 415


def test_chunked_body_without_length_is_cut_off_past_the_limit(client):
    api, holders = client
    before = listing(holders)

    def body():
        yield b'--x\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n\r\n'
        for _ in range(1000):  # 64 MiB if read to the end
            yield b"\x00" * (64 * 1024)

    response = api.post(
        "/holders", content=body(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert response.status_code == 413 and "stopped reading" in response.json()["detail"]
    assert listing(holders) == before
