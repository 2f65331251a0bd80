"""The emoji art dataset (issue 15 §1): npm packages pinned in the lock and read from
node_modules, images composited on white with captions and licences, the registry's ``emoji``
source, and the artist × category holders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from offchain.data import emoji
from offchain.data.datasets import load_dataset
from offchain.data.emoji import (
    ARTISTS,
    CATEGORIES,
    DEFAULT_EMOJI_HOLDER_SIZES,
    DEFAULT_NODE_MODULES,
    emoji_holders,
    load_emoji,
)
from offchain.data.holders import dataset_manifest, holder_address
from offchain.data.splits import dataset_holders
from offchain.errors import DataError


@pytest.fixture(scope="module")
def art() -> emoji.EmojiArt:
    return load_emoji()


@pytest.fixture(scope="module")
def holders() -> list:
    return emoji_holders()


def test_the_pinned_packages_are_the_ones_in_package_json_and_the_lock() -> None:
    root = DEFAULT_NODE_MODULES.parent
    pins = json.loads((root / "package.json").read_text())["dependencies"]
    lock = json.loads((root / "package-lock.json").read_text())["packages"]
    for artist in ARTISTS.values():
        assert pins[artist.package] == artist.version
        assert lock[f"node_modules/{artist.package}"]["version"] == artist.version


def test_load_emoji_gives_rgb_on_white_with_captions_of_every_artist(art: emoji.EmojiArt) -> None:
    n = len(art)
    assert art.images.shape == (n, 64, 64, 3) and art.images.dtype == np.uint8
    assert not art.images.flags.writeable
    counts = {a: int((art.artists == a).sum()) for a in ARTISTS}
    assert counts == {"google": 1906, "twitter": 1906, "openmoji": 1914}
    assert len(art.captions) == len(art.files) == len(art.categories) == n
    assert set(art.categories) <= set(CATEGORIES) and art.labels.dtype == np.int64
    assert all(c == c.lower() and c.strip() == c and c for c in art.captions)
    # emoji are drawn on a transparent canvas: its corners come out white, the middle is not
    assert (art.images[:, 0, 0] == 255).mean() > 0.95
    assert (art.images[:, 24:40, 24:40] != 255).any(axis=(1, 2, 3)).mean() > 0.95
    apple = art.codes == "1F34E"
    assert [art.captions[i] for i in np.flatnonzero(apple)] == ["red apple"] * 3
    red = art.images[apple][:, 24:40, 24:40].reshape(3, -1, 3).mean(axis=1)
    assert (red[:, 0] > red[:, 1] + 60).all()  # every artist's red apple is red


def test_no_apple_or_facebook_image_is_ever_read(art: emoji.EmojiArt) -> None:
    assert not any("apple" in f.split("/")[0] or "facebook" in f for f in art.files)
    assert {f.split("/")[0] for f in art.files} == {a.package for a in ARTISTS.values()}
    with pytest.raises(DataError, match="not openly licensed"):
        load_emoji(("apple",))


def test_two_artists_only_load_alone(art: emoji.EmojiArt) -> None:
    pair = load_emoji(("google", "twitter"))
    assert len(pair) == 3812 and set(pair.artists) == {"google", "twitter"}
    assert np.array_equal(pair.images, art.images[: len(pair)])


def test_a_missing_package_names_it_and_npm_ci(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"emoji-datasource-twitter@16\.0\.0.*npm ci"):
        load_emoji(("twitter",), root=tmp_path)


def test_another_installed_version_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "openmoji"
    fake.mkdir()
    (fake / "package.json").write_text(json.dumps({"name": "openmoji", "version": "15.0.0"}))
    with pytest.raises(DataError, match=r"openmoji@15\.0\.0, the project pins 17\.0\.0"):
        load_emoji(("openmoji",), root=tmp_path)


def test_openmoji_rasterisation_is_cached_and_a_bad_cache_is_rebuilt(tmp_path: Path) -> None:
    folder = DEFAULT_NODE_MODULES / "openmoji"
    entries = emoji._openmoji_entries(folder)[:4]
    first = emoji._cached_images(tmp_path, folder, entries, 16)
    (cached,) = (tmp_path / emoji.CACHE_DIR).glob("*.npy")
    assert np.array_equal(np.load(cached), first) and first.shape == (4, 16, 16, 3)
    np.save(cached, np.zeros((3, 16, 16, 3), np.uint8))  # a stale shape
    assert np.array_equal(emoji._cached_images(tmp_path, folder, entries, 16), first)
    cached.write_bytes(b"not an array")
    assert np.array_equal(emoji._cached_images(tmp_path, folder, entries, 16), first)
    assert np.array_equal(np.load(cached), first)


def test_a_corrupt_png_names_the_file(tmp_path: Path) -> None:
    source = DEFAULT_NODE_MODULES / "emoji-datasource-google"
    copy = tmp_path / "emoji-datasource-google"
    (copy / "img" / "google" / "64").mkdir(parents=True)
    for name in ("package.json", "emoji.json"):
        shutil.copy(source / name, copy / name)
    first = json.loads((source / "emoji.json").read_text())
    wanted = sorted((e for e in first if e["category"] in CATEGORIES), key=lambda e: e["sort_order"])
    (copy / "img" / "google" / "64" / wanted[0]["image"]).write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=wanted[0]["image"]):
        load_emoji(("google",), root=tmp_path)


def test_the_registry_source_labels_every_artist_by_category(art: emoji.EmojiArt) -> None:
    images, labels = load_dataset("emoji")
    assert images.shape == art.images.shape and images.flags.writeable
    assert np.array_equal(labels, art.labels)
    assert set(np.unique(labels)) == set(range(len(CATEGORIES)))


def test_emoji_holders_are_artist_by_category_of_unequal_sizes(holders: list) -> None:
    assert [h.name for h in holders] == [
        f"{a}-{c}" for c in ("smileys", "animals", "food", "objects") for a in ("noto", "twemoji")
    ]
    assert [h.n_images for h in holders] == list(DEFAULT_EMOJI_HOLDER_SIZES)
    assert sum(h.n_images for h in holders) == 440
    for holder in holders:
        artist = ARTISTS["google" if holder.name.startswith("noto") else "twitter"]
        assert holder.address == holder_address(holder.name)
        assert (holder.licence, holder.attribution) == (artist.licence, artist.attribution)
        assert holder.images.shape[1:] == (64, 64, 3) and len(holder.captions) == holder.n_images
        assert len(set(holder.labels.tolist())) == 1
    prices = sorted(h.reservation_price_wei for h in holders)
    assert prices == [t * 10**18 for t in (5, 10, 15, 20, 25, 30, 35, 40)]


def test_two_holders_draw_the_same_subjects_in_different_styles(holders: list) -> None:
    for noto, twemoji in zip(holders[::2], holders[1::2], strict=True):
        shared = noto.n_images
        assert twemoji.captions[:shared] == noto.captions  # same subjects, in order
        diff = np.abs(noto.images.astype(int) - twemoji.images[:shared]).mean(axis=(1, 2, 3))
        assert (diff > 3).all(), diff.min()  # each subject drawn differently
    hashes = [x for h in holders for x in h.image_hashes]
    assert len(set(hashes)) == len(hashes)


def test_emoji_holders_are_seeded_and_checked(holders: list) -> None:
    assert [h.image_hashes for h in emoji_holders(seed=0)] == [h.image_hashes for h in holders]
    assert emoji_holders(seed=1)[0].captions != holders[0].captions
    small = emoji_holders(n_holders=3, sizes=(2, 3, 4), reservation_prices_wei=[1, 2, 3])
    assert [(h.name, h.n_images, h.reservation_price_wei) for h in small] == [
        ("noto-smileys", 2, 1), ("twemoji-smileys", 3, 2), ("noto-animals", 4, 3)
    ]
    om = emoji_holders(n_holders=2, sizes=(3, 3), artists=("openmoji", "google"))
    assert [h.name for h in om] == ["openmoji-smileys", "noto-smileys"]
    assert om[0].licence == "CC-BY-SA-4.0" and om[0].captions is not None
    with pytest.raises(DataError, match="n_holders must lie in"):
        emoji_holders(n_holders=9)
    with pytest.raises(DataError, match="noto-food: needs 500 emoji"):
        emoji_holders(n_holders=5, sizes=(1, 1, 1, 1, 500))
    with pytest.raises(DataError, match="categories must be distinct names"):
        emoji_holders(categories=("Food",))


def test_dataset_holders_of_emoji_are_emoji_holders_and_the_manifest_has_their_checksums(
    holders: list,
) -> None:
    from offchain.quality import held_out_images

    same = dataset_holders("emoji")
    assert [h.image_hashes for h in same] == [h.image_hashes for h in holders]
    entry = dataset_manifest(holders)["holders"][4]
    assert entry["name"] == "noto-food" and entry["image_shape"] == [64, 64, 3]
    assert entry["image_hashes"] == list(holders[4].image_hashes)
    assert entry["captions"] == list(holders[4].captions) and entry["licence"] == "Apache-2.0"
    held_out, _ = held_out_images(holders, "emoji")  # every holder image found and dropped
    assert len(held_out) == 5726 - 440
