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
    captions: list[str] | None = None,
) -> dict[str, str]:
    """The form fields of a registration signed by ``account`` (with ``replace=true`` when
    ``replace``: the v2 message covers it; ``captions``, one per image, signed as
    ``captions_root``)."""
    issued_at = int(time.time()) if issued_at is None else issued_at
    address = address or account.address
    hashes = [hashlib.sha256(b).hexdigest() for b in images]
    signed = dict(zip(hashes, captions, strict=True)) if captions is not None else None
    message = registration_message(
        address, name, price, hashes, issued_at, replace=replace, captions=signed
    )
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


# ---------------------------------------------------------------------------------------------
# Captions (issue 15 §2)
# ---------------------------------------------------------------------------------------------


def captions_file(table: object, raw: bytes | None = None) -> list[tuple]:
    data = raw if raw is not None else json.dumps(table, ensure_ascii=False).encode()
    return [("captions", ("captions.json", data, "application/json"))]


def test_captions_are_validated_signed_stored_and_read_back_by_the_loader(client):
    api, holders = client
    images = [png(1), png(2), png(3, fmt="JPEG")]
    names = ["apple.png", "cat.png", "dog.jpg"]
    sent = {"apple.png": " red apple", "cat.png": "caf\u0065\u0301 cat", sha_of(images[2]): "dog"}
    stored = ["red apple", "caf\u00e9 cat", "dog"]  # NFC, stripped: what is signed and kept
    response = api.post(
        "/holders",
        data=sign(ALICE, images, captions=stored),
        files=files(images, names) + captions_file(sent),
    )
    assert response.status_code == 201, response.text
    on_disk = json.loads((holders / "alice" / "captions.json").read_text(encoding="utf-8"))
    ext = [".png", ".png", ".jpg"]
    assert on_disk == {f"{sha_of(b)}{e}": c for b, e, c in zip(images, ext, stored, strict=True)}
    (holder,) = load_holder_folders(holders, image_size=28)
    by_hash = dict(zip((sha_of(b) for b in images), stored, strict=True))
    assert list(holder.captions) == [by_hash[h] for h in sorted(by_hash)]


def sha_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


GOOD = [png(1), png(2)]
NAMES = ["a.png", "b.png"]


def _caption_cases() -> dict:
    ok = ["apple", "cat"]
    return {
        # name: (captions part(s), signed captions, status, needle)
        "not utf-8": (captions_file(None, b'{"a.png": "\xff", "b.png": "c"}'), ok, 422, "UTF-8"),
        "bad json": (captions_file(None, b'{"a.png": '), ok, 422, "not valid JSON"),
        "a list": (captions_file(["apple", "cat"]), ok, 422, "must be a JSON object"),
        "empty caption": (captions_file({"a.png": " ", "b.png": "cat"}), ok, 422, "is empty"),
        "too long": (captions_file({"a.png": "x" * 201, "b.png": "c"}), ok, 422, "at most 200"),
        "control character": (
            captions_file({"a.png": "red\napple", "b.png": "cat"}), ok, 422, "U+000A"
        ),
        "not text": (captions_file({"a.png": 5, "b.png": "cat"}), ok, 422, "must be text"),
        "unknown image": (
            captions_file({"a.png": "apple", "b.png": "cat", "c.png": "dog"}),
            ok,
            422,
            "'c.png' names no image",
        ),
        "image without caption": (
            captions_file({"a.png": "apple"}), ok, 422, "image 'b.png' has no caption"
        ),
        "two captions for one image": (
            captions_file({"a.png": "apple", sha_of(GOOD[0]): "apple", "b.png": "cat"}),
            ok,
            422,
            "two captions",
        ),
        "two captions files": (
            captions_file({"a.png": "apple", "b.png": "cat"}) * 2, ok, 422, "2 captions files"
        ),
        "captions not signed": (
            captions_file({"a.png": "apple", "b.png": "cat"}), None, 403, "does not sign"
        ),
        "other captions signed": (
            captions_file({"a.png": "apple", "b.png": "cat"}), ["apple", "dog"], 403, "captions"
        ),
        "oversized captions": (
            captions_file({"a.png": "apple", "b.png": "x" * 20_000}), ok, 413, "captions are"
        ),
    }


CAPTION_CASES = _caption_cases()


@pytest.mark.parametrize("case", sorted(CAPTION_CASES))
def test_bad_captions_are_a_clear_4xx_and_change_nothing(client, case):
    api, holders = client
    before = listing(holders)
    parts, signed, status, needle = CAPTION_CASES[case]
    response = api.post(
        "/holders", data=sign(ALICE, GOOD, captions=signed), files=files(GOOD, NAMES) + parts
    )
    assert response.status_code == status, response.text
    assert needle in response.json()["detail"], response.json()["detail"]
    assert listing(holders) == before


def test_captions_by_a_file_name_two_uploads_share_or_as_a_text_field_are_refused(client):
    api, holders = client
    data = sign(ALICE, GOOD, captions=["apple", "cat"])
    shared = captions_file({"x.png": "apple", sha_of(GOOD[1]): "cat"})
    response = api.post("/holders", data=data, files=files(GOOD, ["x.png", "x.png"]) + shared)
    assert response.status_code == 422 and "shared by several" in response.json()["detail"]
    by_hash = captions_file({sha_of(GOOD[0]): "apple", "0x" + sha_of(GOOD[1]): "cat"})
    as_text = {**data, "captions": json.dumps({"a.png": "apple", "b.png": "cat"})}
    response = api.post("/holders", data=as_text, files=files(GOOD, NAMES))
    assert response.status_code == 422 and "as a file part" in response.json()["detail"]
    assert not (holders / "alice").exists()
    response = api.post("/holders", data=data, files=files(GOOD, ["x.png", "x.png"]) + by_hash)
    assert response.status_code == 201, response.text  # keyed by hash, shared names are fine
    assert len(json.loads((holders / "alice" / "captions.json").read_text())) == 2


def test_a_registration_without_captions_signs_and_stores_as_before(client):
    api, holders = client
    response = api.post("/holders", data=sign(ALICE, GOOD), files=files(GOOD))
    assert response.status_code == 201, response.text
    assert not (holders / "alice" / "captions.json").exists()
    assert load_holder_folders(holders)[0].captions is None
