"""Captions and color: the caption rule, holders' RGB images and captions, holder folders with
captions.json or sidecar .txt files (good, missing and malformed), and the manifest's new keys."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from offchain.data.captions import MAX_CAPTION_CHARS, validate_caption
from offchain.data.datasets import check_labelled_images
from offchain.data.folders import holder_folder_images
from offchain.data.holders import (
    Holder,
    dataset_manifest,
    holder_address,
    image_hash,
    load_holder_folders,
    training_captions,
    training_set,
)
from offchain.errors import DataError

ADDRESS = holder_address("alice")


# --- validate_caption ---------------------------------------------------------------------------


def test_validate_caption_normalises_strips_and_decodes_utf8() -> None:
    assert validate_caption("  red apple \n", "x") == "red apple"
    assert validate_caption("cafe\u0301", "x") == "caf\u00e9"  # NFC
    assert validate_caption("caf\u00e9".encode(), "x") == "caf\u00e9"
    assert validate_caption("x" * MAX_CAPTION_CHARS, "x") == "x" * MAX_CAPTION_CHARS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "caption is empty"),
        ("  \n\t ", "caption is empty"),
        ("x" * (MAX_CAPTION_CHARS + 1), "201 characters; at most 200"),
        ("red\napple", "U\\+000A"),
        ("red\x00apple", "U\\+0000"),
        ("red\x1b[31mapple", "U\\+001B"),
        ("a\ud800b", "U\\+D800"),
        (b"\xffapple", "not valid UTF-8"),
        (42, "must be text, got int"),
        (None, "must be text, got NoneType"),
    ],
)
def test_validate_caption_refuses_naming_where(text: object, message: str) -> None:
    with pytest.raises(DataError, match=rf"^img\.png: .*{message}"):
        validate_caption(text, "img.png")  # type: ignore[arg-type]


# --- Holder: RGB, captions, licence -------------------------------------------------------------


def _rgb(n: int = 3, side: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def test_a_holder_takes_rgb_images_captions_licence_and_attribution() -> None:
    holder = Holder(
        "noto", ADDRESS, 0, _rgb(), captions=[" red apple", "cat", "dog "], licence="Apache-2.0",
        attribution="Noto Emoji by Google, Apache License 2.0",
    )
    assert holder.is_rgb and holder.captions == ("red apple", "cat", "dog")
    assert holder.images.shape == (3, 8, 8, 3) and not holder.images.flags.writeable


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"captions": ["a", "b"]}, "captions must be a sequence of 3"),
        ({"captions": "abc"}, "captions must be a sequence of 3"),
        ({"captions": ["a", "", "c"]}, "image 1: caption is empty"),
        ({"licence": "Apache 2"}, "SPDX"),
        ({"licence": ""}, "SPDX"),
        ({"attribution": "  "}, "attribution must be"),
        ({"attribution": "by\nsomeone"}, "attribution must be"),
        ({"images": np.zeros((3, 8, 8, 4), np.uint8)}, r"\(n, H, W\) or \(n, H, W, 3\)"),
        ({"images": np.zeros((3, 8, 8, 3), np.float32)}, r"\(n, H, W\) or \(n, H, W, 3\)"),
    ],
)
def test_a_holder_refuses_bad_captions_licences_and_shapes(kwargs: dict, message: str) -> None:
    args = {"images": _rgb(), **kwargs}
    with pytest.raises(DataError, match=message):
        Holder("noto", ADDRESS, 0, **args)


def test_image_hash_of_rgb_includes_the_channels_and_grayscale_is_unchanged() -> None:
    rgb = _rgb(1)[0]
    assert image_hash(rgb) == hashlib.sha256(b"8x8x3:" + rgb.tobytes()).hexdigest()
    gray = rgb[..., 0].copy()
    assert image_hash(gray) == hashlib.sha256(b"8x8:" + gray.tobytes()).hexdigest()
    with pytest.raises(DataError, match=r"\(H, W\) or \(H, W, 3\)"):
        image_hash(np.zeros((8, 8, 4), np.uint8))


def test_training_captions_follow_training_set_with_the_null_caption_where_none() -> None:
    captioned = Holder("a", holder_address("a"), 0, _rgb(2), captions=["cat", "dog"])
    bare = Holder("b", holder_address("b"), 0, _rgb(3))
    images, index = training_set([captioned, bare])
    assert images.shape == (5, 8, 8, 3) and index.tolist() == [0, 0, 1, 1, 1]
    assert training_captions([captioned, bare]) == ["cat", "dog", "", "", ""]
    assert training_captions([captioned, bare], [False, True]) == ["", "", ""]
    with pytest.raises(DataError, match="training set would be empty"):
        training_captions([captioned, bare], [False, False])
    gray = Holder("c", holder_address("c"), 0, np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataError, match="differ in shape"):
        training_set([captioned, gray])


def test_manifest_adds_captions_licence_and_attribution_only_where_set() -> None:
    bare = Holder("b", holder_address("b"), 0, _rgb(2))
    full = Holder(
        "a", holder_address("a"), 0, _rgb(2), captions=["cat", "dog"], licence="CC-BY-4.0",
        attribution="Twemoji by Twitter, Inc and other contributors, CC-BY 4.0",
    )
    entries = dataset_manifest([full, bare])["holders"]
    assert entries[0]["captions"] == ["cat", "dog"] and entries[0]["licence"] == "CC-BY-4.0"
    assert entries[0]["image_shape"] == [8, 8, 3]
    assert entries[0]["attribution"].startswith("Twemoji")
    assert not {"captions", "licence", "attribution"} & set(entries[1])


def test_check_labelled_images_accepts_rgb_and_refuses_four_channels() -> None:
    check_labelled_images(_rgb(2), np.zeros(2, np.int64))
    with pytest.raises(DataError, match=r"\(N, H, W\) or \(N, H, W, 3\)"):
        check_labelled_images(np.zeros((2, 8, 8, 4), np.uint8), np.zeros(2, np.int64))


# --- Holder folders: color ----------------------------------------------------------------------


def _png(path: Path, color: tuple[int, ...], mode: str = "RGB", size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), color).save(path)
    return path


def test_color_folders_keep_their_color_and_composite_transparency_on_white(
    tmp_path: Path,
) -> None:
    _png(tmp_path / "art" / "red.png", (255, 0, 0))
    _png(tmp_path / "art" / "clear.png", (0, 0, 255, 0), mode="RGBA")
    _png(tmp_path / "art" / "half.png", (0, 0, 0, 128), mode="RGBA")
    (holder,) = load_holder_folders(tmp_path, image_size=8, channels=3)
    assert holder.images.shape == (3, 8, 8, 3) and holder.captions is None
    clear, half, red = holder.images  # sorted by file name
    assert (red == (255, 0, 0)).all() and (clear == 255).all()  # transparent: white
    assert np.abs(half.astype(int) - 127).max() <= 1  # black at alpha 128 over white
    (gray,) = load_holder_folders(tmp_path, image_size=8)  # the default stays grayscale
    assert gray.images.shape == (3, 8, 8)
    images, labels = holder_folder_images(tmp_path, 8, channels=3)
    assert images.shape == (3, 8, 8, 3) and labels.tolist() == [0, 0, 0]
    with pytest.raises(DataError, match="channels must be 1"):
        load_holder_folders(tmp_path, channels=4)


def test_a_palette_png_with_a_transparent_entry_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 200, 0] + [0, 0, 0] * 255)
    img.putpixel((0, 0), 1)
    img.save(tmp_path.joinpath("p").mkdir() or tmp_path / "p" / "a.png", transparency=1)
    (holder,) = load_holder_folders(tmp_path, image_size=8, channels=3)
    assert (holder.images[0, 0, 0] == 255).all() and (holder.images[0, 1, 1] == (0, 200, 0)).all()


# --- Holder folders: captions -------------------------------------------------------------------


@pytest.fixture()
def art(tmp_path: Path) -> Path:
    folder = tmp_path / "holders" / "alice"
    _png(folder / "apple.png", (200, 0, 0))
    _png(folder / "cat.png", (0, 0, 0))
    return tmp_path / "holders"


def test_captions_come_from_captions_json(art: Path) -> None:
    (art / "alice" / "captions.json").write_text(
        json.dumps({"cat.png": "black cat", "apple.png": " red apple "})
    )
    (holder,) = load_holder_folders(art, image_size=8, channels=3)
    assert holder.captions == ("red apple", "black cat")


def test_captions_come_from_sidecar_files_and_may_mix_with_captions_json(art: Path) -> None:
    (art / "alice" / "apple.txt").write_bytes("pomme rouge caf\u00e9\n".encode())
    (art / "alice" / "captions.json").write_text(json.dumps({"cat.png": "black cat"}))
    (holder,) = load_holder_folders(art, image_size=8)
    assert holder.captions == ("pomme rouge caf\u00e9", "black cat")


def test_a_folder_without_captions_gives_no_captions(art: Path) -> None:
    (holder,) = load_holder_folders(art, image_size=8)
    assert holder.captions is None


def _write(art: Path, name: str, content: str | bytes) -> Path:
    path = art / "alice" / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("files", "blamed", "message"),
    [
        ({"captions.json": '{"apple.png": "apple", '}, "captions.json", "not valid UTF-8 JSON"),
        ({"captions.json": '["apple"]'}, "captions.json", "expected a JSON object"),
        ({"captions.json": b'{"apple.png": "\xff"}'}, "captions.json", "not valid UTF-8 JSON"),
        (
            {"captions.json": '{"apple.png": "a", "cat.png": "c", "dog.png": "d"}'},
            "captions.json",
            "caption for 'dog.png', which is not an image file",
        ),
        ({"captions.json": '{"apple.png": "", "cat.png": "c"}'}, "captions.json", "empty"),
        ({"captions.json": '{"apple.png": 3, "cat.png": "c"}'}, "captions.json", "must be text"),
        (
            {"captions.json": json.dumps({"apple.png": "x" * 201, "cat.png": "c"})},
            "captions.json",
            "201 characters",
        ),
        (
            {"captions.json": json.dumps({"apple.png": "a\u0007", "cat.png": "c"})},
            "captions.json",
            "U\\+0007",
        ),
        ({"apple.txt": "red apple"}, "cat.png", "no caption, but .* has captions"),
        ({"captions.json": '{"cat.png": "cat"}'}, "apple.png", "no caption"),
        ({"apple.txt": "", "cat.txt": "cat"}, "apple.txt", "caption is empty"),
        ({"apple.txt": b"\xc3(", "cat.txt": "cat"}, "apple.txt", "not valid UTF-8"),
        ({"apple.txt": "red\napple", "cat.txt": "cat"}, "apple.txt", "U\\+000A"),
        ({"dog.txt": "dog"}, "dog.txt", "matches no image named dog"),
        (
            {"apple.txt": "a", "cat.txt": "c", "captions.json": '{"cat.png": "cat"}'},
            "cat.png",
            "two captions",
        ),
    ],
)
def test_missing_or_malformed_captions_are_refused_naming_the_file(
    art: Path, files: dict[str, str | bytes], blamed: str, message: str
) -> None:
    for name, content in files.items():
        _write(art, name, content)
    with pytest.raises(DataError, match=message) as info:
        load_holder_folders(art, image_size=8)
    assert str(art / "alice" / blamed) in str(info.value)


def test_a_sidecar_caption_for_two_images_with_one_stem_is_ambiguous(art: Path) -> None:
    _png(art / "alice" / "apple.jpg", (0, 200, 0))
    _write(art, "apple.txt", "apple")
    with pytest.raises(DataError, match=r"apple.txt: sidecar caption matches 2 images"):
        load_holder_folders(art, image_size=8)


def test_holder_json_may_state_licence_and_attribution(art: Path) -> None:
    _write(art, "holder.json", json.dumps({"licence": "CC-BY-4.0", "attribution": "Alice, 2026"}))
    (holder,) = load_holder_folders(art, image_size=8)
    assert (holder.licence, holder.attribution) == ("CC-BY-4.0", "Alice, 2026")
    _write(art, "holder.json", json.dumps({"licence": "not a licence!"}))
    with pytest.raises(DataError, match="holder.json: licence 'not a licence!' is not an SPDX"):
        load_holder_folders(art, image_size=8)


def test_a_16_bit_grayscale_png_in_a_color_folder_is_scaled_not_clipped(tmp_path: Path) -> None:
    folder = tmp_path / "g"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(folder / "mid.png")
    (holder,) = load_holder_folders(tmp_path, image_size=8, channels=3)
    assert (holder.images == 128).all()
