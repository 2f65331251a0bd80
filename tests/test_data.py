"""Data stage: MNIST loading and checksums, the demo holder split, folders of user images."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from eth_utils import is_checksum_address
from PIL import Image

from offchain.data.holders import (
    DEFAULT_HOLDER_SIZES,
    Holder,
    dataset_manifest,
    dominant_classes,
    holder_address,
    holder_private_key,
    load_holder_folders,
    manifest_hashes,
    mnist_holders,
    write_dataset_manifest,
)
from offchain.data.mnist import (
    DEFAULT_MNIST_ROOT,
    IMAGES_FILE,
    LABELS_FILE,
    load_mnist,
    parse_idx_images,
    parse_idx_labels,
)
from offchain.data.splits import dataset_holder_sizes, dataset_holders
from offchain.errors import ConfigError, DataError
from offchain.utils import read_json

ADDRESS = "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2"


@pytest.fixture(scope="module")
def demo_holders() -> list[Holder]:
    return mnist_holders()


@pytest.fixture()
def mnist_copy(tmp_path: Path) -> Path:
    root = tmp_path / "mnist"
    shutil.copytree(DEFAULT_MNIST_ROOT, root)
    for path in root.iterdir():
        path.chmod(0o644)
    return root


# --- MNIST --------------------------------------------------------------------------------------


def test_load_mnist_returns_the_test_split() -> None:
    images, labels = load_mnist()
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))
    assert images.max() == 255 and images.min() == 0


def test_load_mnist_raises_naming_the_file_when_one_byte_is_corrupted(mnist_copy: Path) -> None:
    target = mnist_copy / LABELS_FILE
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    expected = (mnist_copy / "SHA256SUMS").read_text().split("\n")[1].split()[0]
    with pytest.raises(DataError, match=LABELS_FILE) as info:
        load_mnist(mnist_copy)
    assert "checksum mismatch" in str(info.value)
    assert expected in str(info.value)


def test_load_mnist_raises_when_a_file_is_missing(mnist_copy: Path) -> None:
    (mnist_copy / IMAGES_FILE).unlink()
    with pytest.raises(DataError, match=IMAGES_FILE):
        load_mnist(mnist_copy)


def test_load_mnist_raises_when_the_checksum_file_is_missing(mnist_copy: Path) -> None:
    (mnist_copy / "SHA256SUMS").unlink()
    with pytest.raises(DataError, match="SHA256SUMS"):
        load_mnist(mnist_copy)


def test_parse_idx_images_rejects_a_wrong_magic_number() -> None:
    data = struct.pack(">IIII", 2049, 1, 2, 2) + bytes(4)
    with pytest.raises(DataError, match="magic number is 2049, expected 2051"):
        parse_idx_images(data, source="x.idx")


def test_parse_idx_images_rejects_a_truncated_payload() -> None:
    data = struct.pack(">IIII", 2051, 2, 2, 2) + bytes(7)
    with pytest.raises(DataError, match="truncated"):
        parse_idx_images(data, source="x.idx")


def test_parse_idx_labels_rejects_a_short_header_and_trailing_bytes() -> None:
    with pytest.raises(DataError, match="header needs 8 bytes"):
        parse_idx_labels(b"\x00\x00\x08", source="y.idx")
    with pytest.raises(DataError, match="trailing bytes"):
        parse_idx_labels(struct.pack(">II", 2049, 2) + bytes(3), source="y.idx")


def test_parse_idx_reads_big_endian_headers() -> None:
    pixels = np.arange(12, dtype=np.uint8)
    images = parse_idx_images(struct.pack(">IIII", 2051, 3, 2, 2) + pixels.tobytes())
    assert images.shape == (3, 2, 2) and images[2, 1, 1] == 11
    labels = parse_idx_labels(struct.pack(">II", 2049, 3) + bytes([7, 0, 9]))
    assert labels.tolist() == [7, 0, 9] and labels.dtype == np.int64


def test_load_mnist_rejects_a_bad_gzip_stream_with_a_matching_checksum(mnist_copy: Path) -> None:
    import hashlib

    bad = gzip.compress(struct.pack(">II", 2049, 5) + bytes(2))  # truncated payload
    (mnist_copy / LABELS_FILE).write_bytes(bad)
    sums = (mnist_copy / "SHA256SUMS").read_text().splitlines()
    sums[1] = f"{hashlib.sha256(bad).hexdigest()}  {LABELS_FILE}"
    (mnist_copy / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    with pytest.raises(DataError, match="truncated"):
        load_mnist(mnist_copy)


# --- MNIST holders ------------------------------------------------------------------------------


def test_mnist_holders_have_the_default_unequal_sizes(demo_holders: list[Holder]) -> None:
    sizes = [h.n_images for h in demo_holders]
    assert sizes == list(DEFAULT_HOLDER_SIZES)
    assert len(set(sizes)) == len(sizes)
    assert all(h.images.shape[1:] == (28, 28) and h.images.dtype == np.uint8 for h in demo_holders)


def test_mnist_holders_share_no_image(demo_holders: list[Holder]) -> None:
    hashes = [x for h in demo_holders for x in h.image_hashes]
    assert len(hashes) == len(set(hashes)) == sum(DEFAULT_HOLDER_SIZES)


def test_mnist_holders_have_distinct_dominant_class_mixes(demo_holders: list[Holder]) -> None:
    mixes = []
    for index, holder in enumerate(demo_holders):
        counts = np.bincount(holder.labels, minlength=10)
        first, second = dominant_classes(index)
        share = (counts[first] + counts[second]) / holder.n_images
        assert 0.6 <= share <= 0.8, (holder.name, counts)
        assert set(np.argsort(counts)[-2:]) == {first, second}, (holder.name, counts)
        mixes.append((first, second))
    assert len(set(mixes)) == len(mixes)


def test_mnist_holders_are_deterministic_by_seed(demo_holders: list[Holder]) -> None:
    again = mnist_holders()
    assert [h.image_hashes for h in again] == [h.image_hashes for h in demo_holders]
    assert [h.reservation_price_wei for h in again] == [
        h.reservation_price_wei for h in demo_holders
    ]
    other = mnist_holders(seed=1)
    assert [h.image_hashes for h in other] != [h.image_hashes for h in demo_holders]


def test_mnist_holders_have_demo_addresses_and_varied_token_prices(
    demo_holders: list[Holder],
) -> None:
    from eth_account import Account

    for holder in demo_holders:
        assert is_checksum_address(holder.address)
        assert Account.from_key(holder_private_key(holder.name)).address == holder.address
        assert 5 * 10**18 <= holder.reservation_price_wei <= 40 * 10**18
        assert holder.reservation_price_wei % 10**18 == 0
    assert len({h.address for h in demo_holders}) == len(demo_holders)
    assert len({h.reservation_price_wei for h in demo_holders}) == len(demo_holders)


def test_mnist_holders_accept_explicit_sizes_and_prices() -> None:
    holders = mnist_holders(n_holders=4, sizes=(6, 8, 10, 12), reservation_prices_wei=[1, 2, 3, 4])
    assert [h.n_images for h in holders] == [6, 8, 10, 12]
    assert [h.reservation_price_wei for h in holders] == [1, 2, 3, 4]


def test_mnist_holders_reject_sizes_of_the_wrong_length() -> None:
    with pytest.raises(DataError, match="sizes has 2 entries for 3 holders"):
        mnist_holders(n_holders=3, sizes=(5, 6))


# --- Holders of any shipped dataset ------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "shape", "total", "n_reference"),
    [("mnist", (28, 28), 512, 10000), ("digits", (8, 8), 512, 1797), ("lfw", (25, 25), 100, 200)],
)
def test_dataset_holders_split_each_dataset_disjointly_with_held_out_images_left(
    dataset: str, shape: tuple[int, int], total: int, n_reference: int
) -> None:
    from offchain.quality import held_out_images

    holders = dataset_holders(dataset)
    sizes = [h.n_images for h in holders]
    assert [h.name for h in holders] == [f"holder_{i}" for i in range(8)]
    assert all(h.address == holder_address(h.name) for h in holders)
    assert sum(sizes) == total and len(set(sizes)) == len(sizes)
    assert all(h.images.shape[1:] == shape and h.images.dtype == np.uint8 for h in holders)
    hashes = [x for h in holders for x in h.image_hashes]
    assert len(set(hashes)) == len(hashes) == total
    held_out, _ = held_out_images(holders, dataset)  # every holder image found and dropped
    assert len(held_out) == n_reference - total


def test_dataset_holders_equal_mnist_holders_for_mnist(demo_holders: list[Holder]) -> None:
    for kwargs in ({}, {"seed": 3, "n_holders": 4, "sizes": (6, 8, 10, 12)}):
        general = dataset_holders("mnist", **kwargs)
        legacy = demo_holders if not kwargs else mnist_holders(**kwargs)
        assert [h.image_hashes for h in general] == [h.image_hashes for h in legacy]
        assert [h.reservation_price_wei for h in general] == [
            h.reservation_price_wei for h in legacy
        ]
        assert all(np.array_equal(a.labels, b.labels) for a, b in zip(general, legacy, strict=True))


def test_dataset_holders_are_deterministic_by_seed() -> None:
    first = dataset_holders("digits")
    assert [h.image_hashes for h in dataset_holders("digits")] == [h.image_hashes for h in first]
    assert [h.image_hashes for h in dataset_holders("digits", seed=1)] != [
        h.image_hashes for h in first
    ]


def test_digits_holders_have_two_dominant_classes() -> None:
    for index, holder in enumerate(dataset_holders("digits")):
        counts = np.bincount(holder.labels, minlength=10)
        first, second = dominant_classes(index)
        assert 0.6 <= (counts[first] + counts[second]) / holder.n_images <= 0.8


def test_lfw_holders_have_one_dominant_class_of_two() -> None:
    for index, holder in enumerate(dataset_holders("lfw")):
        counts = np.bincount(holder.labels, minlength=2)
        assert counts[index % 2] == round(0.7 * holder.n_images), (holder.name, counts)


def test_dataset_holder_sizes_leave_about_half_of_a_small_dataset() -> None:
    assert dataset_holder_sizes(8, 10000) == DEFAULT_HOLDER_SIZES
    assert dataset_holder_sizes(8, 200) == (5, 6, 8, 9, 12, 16, 19, 25)
    assert sum(dataset_holder_sizes(12, 200)) <= 102


def test_dataset_holders_reject_an_unknown_dataset_and_too_many_images() -> None:
    with pytest.raises(ConfigError, match="unknown dataset"):
        dataset_holders("cifar")
    with pytest.raises(DataError, match="lfw"):
        dataset_holders("lfw", n_holders=2, sizes=(150, 60))


def test_holder_rejects_a_non_checksum_address() -> None:
    with pytest.raises(DataError, match="EIP-55"):
        Holder("a", ADDRESS.lower(), 0, np.zeros((1, 4, 4), np.uint8), None)


def test_holder_images_are_read_only(demo_holders: list[Holder]) -> None:
    with pytest.raises(ValueError):
        demo_holders[0].images[0, 0, 0] = 1


# --- Folder loader ------------------------------------------------------------------------------


def _write_png(
    path: Path, size: tuple[int, int] = (20, 30), mode: str = "L", value: int = 200
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=value if mode == "L" else (value, 0, 0)).save(path)


@pytest.fixture()
def holder_root(tmp_path: Path) -> Path:
    root = tmp_path / "holders"
    _write_png(root / "alice" / "a.png")
    _write_png(root / "alice" / "b.PNG", mode="RGB")
    (root / "alice" / "holder.json").write_text(
        json.dumps({"address": ADDRESS, "reservation_price_wei": 7 * 10**18})
    )
    _write_png(root / "bob" / "c.jpg", size=(28, 28), mode="RGB")
    return root


def test_load_holder_folders_reads_a_good_folder(holder_root: Path) -> None:
    holders = load_holder_folders(holder_root)
    assert [h.name for h in holders] == ["alice", "bob"]
    alice, bob = holders
    assert alice.images.shape == (2, 28, 28) and alice.images.dtype == np.uint8
    assert alice.address == ADDRESS and alice.reservation_price_wei == 7 * 10**18
    assert alice.labels is None
    assert bob.address == holder_address("bob") and bob.reservation_price_wei == 0
    assert load_holder_folders(holder_root, image_size=16)[0].images.shape == (2, 16, 16)


def test_load_holder_folders_raises_naming_a_corrupt_png(holder_root: Path) -> None:
    bad = holder_root / "bob" / "broken.png"
    bad.write_bytes((holder_root / "alice" / "a.png").read_bytes()[:30])
    with pytest.raises(DataError, match="broken.png"):
        load_holder_folders(holder_root)


def test_load_holder_folders_raises_on_an_empty_holder_folder(holder_root: Path) -> None:
    (holder_root / "carol").mkdir()
    with pytest.raises(DataError, match="carol"):
        load_holder_folders(holder_root)


def test_load_holder_folders_raises_on_a_bad_address(holder_root: Path) -> None:
    (holder_root / "bob" / "holder.json").write_text(json.dumps({"address": "0x1234"}))
    with pytest.raises(DataError, match=r"bob/holder.json.*0x1234"):
        load_holder_folders(holder_root)


def test_load_holder_folders_raises_on_a_wrong_checksum(holder_root: Path) -> None:
    wrong = "0x" + ADDRESS[2].swapcase() + ADDRESS[3:]  # the first hex letter with its case flipped
    assert ADDRESS[2].isalpha()
    (holder_root / "bob" / "holder.json").write_text(json.dumps({"address": wrong}))
    with pytest.raises(DataError, match="checksum"):
        load_holder_folders(holder_root)


def test_load_holder_folders_raises_on_a_negative_price(holder_root: Path) -> None:
    (holder_root / "bob" / "holder.json").write_text(json.dumps({"reservation_price_wei": -1}))
    with pytest.raises(DataError, match="reservation_price_wei must be >= 0"):
        load_holder_folders(holder_root)


@pytest.mark.parametrize("price", ["²", "1.5", "-1", " 7", 1.5])
def test_load_holder_folders_refuses_a_price_that_is_not_decimal_wei(
    holder_root: Path, price: object
) -> None:
    (holder_root / "bob" / "holder.json").write_text(json.dumps({"reservation_price_wei": price}))
    with pytest.raises(DataError, match="reservation_price_wei must be an integer"):
        load_holder_folders(holder_root)


def test_load_holder_folders_reads_a_price_written_as_a_decimal_string(holder_root: Path) -> None:
    (holder_root / "bob" / "holder.json").write_text(
        json.dumps({"reservation_price_wei": "208873506586492146964"}))
    bob = next(h for h in load_holder_folders(holder_root) if h.name == "bob")
    assert bob.reservation_price_wei == 208873506586492146964


def test_load_holder_folders_raises_on_an_unsupported_file(holder_root: Path) -> None:
    (holder_root / "alice" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="notes.txt"):
        load_holder_folders(holder_root)


# --- Manifest -----------------------------------------------------------------------------------


def test_write_dataset_manifest_records_holders_and_a_stable_hash(
    tmp_path: Path, demo_holders: list[Holder]
) -> None:
    manifest = write_dataset_manifest(demo_holders, tmp_path / "m.json")
    assert read_json(tmp_path / "m.json") == manifest
    first = manifest["holders"][0]
    assert first["name"] == "holder_0"
    assert first["n_images"] == len(first["image_hashes"]) == DEFAULT_HOLDER_SIZES[0]
    assert first["reservation_price_wei"] == str(demo_holders[0].reservation_price_wei)
    again = write_dataset_manifest(mnist_holders(), tmp_path / "m2.json")
    assert again["manifest_hash"] == manifest["manifest_hash"]
    changed = mnist_holders(reservation_prices_wei=[1] * 8)
    assert (
        write_dataset_manifest(changed, tmp_path / "m3.json")["manifest_hash"]
        != (manifest["manifest_hash"])
    )


def test_manifest_prices_are_decimal_strings_and_older_integer_hashes_still_match(
    tmp_path: Path, demo_holders: list[Holder]
) -> None:
    """Issue 13, item 12: holders.json keeps wei exact for a JavaScript client; a run folder
    written before the rule (integer prices, their hash) still resumes."""
    manifest = dataset_manifest(demo_holders)
    prices = [h["reservation_price_wei"] for h in manifest["holders"]]
    assert all(isinstance(p, str) and p.isdigit() for p in prices)
    canonical = json.dumps(manifest["holders"], sort_keys=True, separators=(",", ":"))
    assert manifest["manifest_hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    legacy = [{**h, "reservation_price_wei": int(h["reservation_price_wei"])}
              for h in manifest["holders"]]
    legacy_hash = hashlib.sha256(
        json.dumps(legacy, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert manifest_hashes(demo_holders) == {manifest["manifest_hash"], legacy_hash}


# --- Issue 13: duplicate addresses, 16-bit images, size limits ----------------------------------


def test_load_holder_folders_refuses_two_holders_with_one_address(holder_root: Path) -> None:
    (holder_root / "bob" / "holder.json").write_text(json.dumps({"address": ADDRESS.lower()}))
    with pytest.raises(DataError, match=r"'alice' and 'bob' have the same payout address"):
        load_holder_folders(holder_root)


def test_dataset_manifest_refuses_two_holders_with_one_address(
    demo_holders: list[Holder], tmp_path: Path
) -> None:
    twin = Holder("twin", demo_holders[0].address, 0, demo_holders[1].images)
    with pytest.raises(DataError, match=r"'holder_0' and 'twin'"):
        write_dataset_manifest([demo_holders[0], twin], tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def _png16(path: Path, pixels: np.ndarray, color_type: int) -> None:
    """A 16-bit PNG written byte by byte (Pillow writes no 16-bit RGB): ``color_type`` 0 gray,
    2 RGB, 4 gray+alpha, 6 RGBA; ``pixels`` uint16 (H, W[, C])."""
    import zlib

    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _gradient16(size: int = 16) -> np.ndarray:
    return np.linspace(0, 65535, size * size).round().astype(np.uint16).reshape(size, size)


def test_load_holder_folders_scales_a_16_bit_grayscale_png_written_by_pillow(
    tmp_path: Path,
) -> None:
    pixels = _gradient16()
    path = tmp_path / "holders" / "alice" / "deep.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(pixels).save(path)  # Pillow writes mode I;16 as a 16-bit PNG
    assert Image.open(path).mode.startswith("I")
    (loaded,) = load_holder_folders(tmp_path / "holders", image_size=16)
    expected = ((pixels.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
    np.testing.assert_array_equal(loaded.images[0], expected)
    assert loaded.images[0].mean() < 140  # not clipped to white (255) as convert("L") does


@pytest.mark.parametrize(("color_type", "channels"), [(0, None), (2, 3), (4, 2), (6, 4)])
def test_decode_grayscale_reads_every_16_bit_png_kind_as_mid_gray(
    tmp_path: Path, color_type: int, channels: int | None
) -> None:
    from offchain.data.holders import decode_grayscale

    shape = (10, 10) if channels is None else (10, 10, channels)
    _png16(tmp_path / "x.png", np.full(shape, 32768, np.uint16), color_type)
    with Image.open(tmp_path / "x.png") as img:
        gray = np.asarray(decode_grayscale(img))
    assert gray.dtype == np.uint8 and np.all(gray == 128)


def test_load_holder_folders_refuses_images_the_registration_api_refuses(tmp_path: Path) -> None:
    from offchain.api.registration import RegistrationLimits

    _write_png(tmp_path / "holders" / "alice" / "dot.png", size=(1, 1))
    with pytest.raises(DataError, match=r"dot.png: image is 1x1 px; each side must lie in \[8, 4096\]"):
        load_holder_folders(tmp_path / "holders")
    (tmp_path / "holders" / "alice" / "dot.png").unlink()
    _write_png(tmp_path / "holders" / "alice" / "wide.png", size=(4097, 8))
    with pytest.raises(DataError, match="wide.png: image is 4097x8 px"):
        load_holder_folders(tmp_path / "holders")
    limits = RegistrationLimits()
    assert (limits.min_side_px, limits.max_side_px) == (8, 4096)  # the API's limits are these
