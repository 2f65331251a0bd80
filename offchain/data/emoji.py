"""Emoji art: openly licensed renditions of the same subjects by several artists, with captions.

The images come from npm packages pinned in the project's ``package.json`` / lock and installed
into ``node_modules/`` by ``npm ci`` (``scripts/setup.sh``):

========== ============================ =================== ================== ==============
artist     package                      files               images licence     holder prefix
========== ============================ =================== ================== ==============
google     emoji-datasource-google      img/google/64/*.png Apache-2.0 (Noto)  ``noto-``
twitter    emoji-datasource-twitter     img/twitter/64/*.png CC-BY-4.0         ``twemoji-``
openmoji   openmoji                     color/svg/*.svg     CC-BY-SA-4.0       ``openmoji-``
========== ============================ =================== ================== ==============

(The emoji-datasource packages are MIT-licensed code; their image licences are the artists'.)
Apple's and Facebook's images, which other emoji-datasource packages carry, are not openly
licensed and are never read.

Which emoji: the base emoji (no skin-tone variants) of the nine Unicode categories other than
``Component``, as listed in ``emoji.json`` (``name``, ``category``, ``image``,
``has_img_<artist>``) or, for OpenMoji, ``data/openmoji.json`` (``annotation``, ``group``,
``hexcode``; its ``extras-*`` groups are not Unicode emoji and are left out). The caption of an
emoji is its Unicode name in lower case ("red apple"). PNGs are 64×64 RGBA and SVGs are
rasterised by resvg (``resvg-py``, system fonts off so the pixels do not depend on the
machine); both are alpha-composited on white (:func:`offchain.data.holders.decode_rgb`).

Rasterising OpenMoji's 1,914 SVGs takes about 4 s, so the result is cached in
``node_modules/.cache/offchain-emoji/`` (one ``.npy`` per size, named by a hash of the package's
version and metadata, the rasteriser's version and the size; ``npm ci`` empties it with the rest
of ``node_modules``). The PNG artists load in about 1.5 s for both and are not cached on disk;
within a process every artist is loaded once.

* :func:`load_emoji` — every emoji of some artists, uint8 (N, S, S, 3) with captions, artists,
  categories and source files.
* :func:`emoji_images` — the registry's ``emoji`` dataset: all artists, labels = category index.
* :func:`emoji_holders` — the emoji campaign's holders: artist × category groups of unequal
  sizes, two artists drawing the same subjects.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from offchain.allocation.wei import WEI_PER_TOKEN
from offchain.data.captions import validate_caption
from offchain.data.holders import (
    IMAGE_DECODE_ERRORS,
    Holder,
    decode_rgb,
    holder_address,
)
from offchain.errors import DataError

__all__ = [
    "ARTISTS",
    "CATEGORIES",
    "DEFAULT_EMOJI_HOLDER_SIZES",
    "DEFAULT_NODE_MODULES",
    "HOLDER_CATEGORIES",
    "EMOJI_SIZE",
    "Artist",
    "EmojiArt",
    "emoji_holders",
    "emoji_images",
    "load_emoji",
]

logger = logging.getLogger(__name__)

DEFAULT_NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
"""The project's ``node_modules`` folder, where ``npm ci`` installs the emoji packages."""

EMOJI_SIZE = 64
"""Native side in pixels of the emoji images (the PNGs' size; SVGs are rasterised at it)."""

INSTALL_HINT = "run `npm ci` in the project folder (scripts/setup.sh does)"

CACHE_DIR = Path(".cache") / "offchain-emoji"
"""Where rasterised OpenMoji images are cached, relative to the ``node_modules`` folder."""


@dataclass(frozen=True)
class Artist:
    """One emoji artist: the npm package that carries its images, and their licence."""

    key: str
    """``google``, ``twitter`` or ``openmoji`` (the name :func:`load_emoji` takes)."""
    package: str
    """npm package name, installed under ``node_modules/``."""
    version: str
    """The version pinned in ``package.json``; another installed version is refused."""
    label: str
    """Short name of the artist's style, the prefix of its holders' names."""
    licence: str
    """SPDX id of the images' licence."""
    attribution: str
    """The credit the licence requires."""


ARTISTS: dict[str, Artist] = {
    "google": Artist(
        "google", "emoji-datasource-google", "16.0.0", "noto", "Apache-2.0",
        "Noto Emoji by Google, Apache License 2.0",
    ),
    "twitter": Artist(
        "twitter", "emoji-datasource-twitter", "16.0.0", "twemoji", "CC-BY-4.0",
        "Twemoji by Twitter, Inc and other contributors, CC-BY 4.0",
    ),
    "openmoji": Artist(
        "openmoji", "openmoji", "17.0.0", "openmoji", "CC-BY-SA-4.0",
        "OpenMoji, the open-source emoji and icon project, CC BY-SA 4.0",
    ),
}
"""The openly licensed artists, by key (never Apple or Facebook)."""

CATEGORIES: tuple[str, ...] = (
    "Smileys & Emotion",
    "People & Body",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
    "Symbols",
    "Flags",
)
"""The Unicode emoji categories read, in Unicode's order; a label is an index into it."""

_SHORT = {
    "Smileys & Emotion": "smileys",
    "People & Body": "people",
    "Animals & Nature": "animals",
    "Food & Drink": "food",
    "Travel & Places": "travel",
    "Activities": "activities",
    "Objects": "objects",
    "Symbols": "symbols",
    "Flags": "flags",
}
"""Category → the suffix of its holders' names (``noto-food``)."""

_OPENMOJI_GROUPS = {c.lower().replace(" & ", "-").replace(" ", "-"): c for c in CATEGORIES}
"""OpenMoji's group slugs (``food-drink``) → the category."""

HOLDER_CATEGORIES: tuple[str, ...] = ("Smileys & Emotion", "Animals & Nature", "Food & Drink", "Objects")
"""The categories of the default emoji holders, each drawn by every holder artist."""

DEFAULT_EMOJI_HOLDER_SIZES: tuple[int, ...] = (24, 32, 40, 48, 56, 64, 80, 96)
"""Images of the 8 default emoji holders (440 in all), in holder order
(noto-smileys, twemoji-smileys, noto-animals, …, twemoji-objects)."""


@dataclass(frozen=True, eq=False)
class EmojiArt:
    """Emoji images of one or more artists, with their captions and where each came from.

    Arrays are read-only; every per-image field has length N.
    """

    images: np.ndarray
    """uint8 (N, S, S, 3) RGB, composited on white."""
    captions: tuple[str, ...]
    """Lower-case emoji names ("red apple"), validated captions."""
    artists: np.ndarray
    """str (N,) artist key of each image (``google``, ``twitter``, ``openmoji``)."""
    categories: np.ndarray
    """str (N,) Unicode category of each image (one of :data:`CATEGORIES`)."""
    codes: np.ndarray
    """str (N,) the emoji's code points, upper-case hex joined by ``-``, without ``FE0F``: the
    subject, equal across artists."""
    files: tuple[str, ...]
    """Source file of each image, relative to ``node_modules``."""

    @property
    def labels(self) -> np.ndarray:
        """int64 (N,) index of each image's category in :data:`CATEGORIES`."""
        index = {c: i for i, c in enumerate(CATEGORIES)}
        return np.fromiter((index[c] for c in self.categories), np.int64, len(self.categories))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray | Sequence[int]) -> EmojiArt:
        """The images at ``index`` (ints, in that order), with their fields."""
        index = np.asarray(index, dtype=np.int64)
        return EmojiArt(
            images=_read_only(self.images[index]),
            captions=tuple(self.captions[i] for i in index),
            artists=_read_only(self.artists[index]),
            categories=_read_only(self.categories[index]),
            codes=_read_only(self.codes[index]),
            files=tuple(self.files[i] for i in index),
        )


def load_emoji(
    artists: Sequence[str] = ("google", "twitter", "openmoji"),
    root: Path = DEFAULT_NODE_MODULES,
    size: int = EMOJI_SIZE,
) -> EmojiArt:
    """Every emoji of ``artists``, artist after artist, each in Unicode's order.

    Loaded images are kept in memory for the process (per artist, root and size), so a second
    call costs only the copy.

    Args:
        artists: keys of :data:`ARTISTS`, without repeats.
        root: the ``node_modules`` folder holding the packages.
        size: side S in pixels; 64 is native, other sides are resampled (PNGs with Pillow's
            antialiased bilinear filter, SVGs rasterised at S).

    Returns:
        An :class:`EmojiArt` of uint8 (N, S, S, 3) images.

    Raises:
        DataError: an unknown or repeated artist, a side outside [8, 512], a package missing
            from ``root`` or of another version than pinned (naming it and ``npm ci``), or an
            unreadable file of the package.
    """
    if not artists or len(set(artists)) != len(artists):
        raise DataError(f"artists must be distinct and non-empty, got {list(artists)}")
    unknown = [a for a in artists if a not in ARTISTS]
    if unknown:
        raise DataError(
            f"unknown emoji artist(s) {unknown}; expected some of {sorted(ARTISTS)} (Apple's and "
            "Facebook's images are not openly licensed and are not offered)"
        )
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 512:
        raise DataError(f"emoji size must be an int in [8, 512] pixels, got {size!r}")
    parts = [_load_artist(str(Path(root).resolve()), a, size) for a in artists]
    return EmojiArt(
        images=_read_only(np.concatenate([p.images for p in parts])),
        captions=sum((p.captions for p in parts), ()),
        artists=_read_only(np.concatenate([p.artists for p in parts])),
        categories=_read_only(np.concatenate([p.categories for p in parts])),
        codes=_read_only(np.concatenate([p.codes for p in parts])),
        files=sum((p.files for p in parts), ()),
    )


def emoji_images(
    root: Path = DEFAULT_NODE_MODULES,
    artists: Sequence[str] = ("google", "twitter", "openmoji"),
    size: int = EMOJI_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """The registry's ``emoji`` dataset: :func:`load_emoji` of every artist, labelled by category.

    Returns:
        ``(images, labels)``: fresh uint8 (N, S, S, 3) RGB and int64 (N,) indices into
        :data:`CATEGORIES` (N = 5,726 for the pinned packages: 1,906 each of Noto and Twemoji,
        1,914 of OpenMoji).

    Raises:
        DataError: as :func:`load_emoji`.
    """
    art = load_emoji(artists, root, size)
    return art.images.copy(), art.labels


def emoji_holders(
    n_holders: int = 8,
    sizes: Sequence[int] | None = None,
    seed: int = 0,
    reservation_prices_wei: Sequence[int] | None = None,
    root: Path = DEFAULT_NODE_MODULES,
    artists: Sequence[str] = ("google", "twitter"),
    categories: Sequence[str] = HOLDER_CATEGORIES,
) -> list[Holder]:
    """Holders of emoji art: one per (category, artist) group, two artists drawing one subject.

    The groups are ``categories × artists`` in that order (category-major): by default
    noto-smileys, twemoji-smileys, noto-animals, twemoji-animals, noto-food, twemoji-food,
    noto-objects, twemoji-objects; the first ``n_holders`` groups become holders named
    ``<artist label>-<category>``, with the demo address :func:`holder_address` of that name,
    the artist's licence and attribution, captions (emoji names) and labels (category index).
    Within a category every artist draws from the same subjects: the emoji that all
    ``artists`` have there, in a seeded order; a holder of ``size`` images takes the first
    ``size`` of them, so the smaller of two holders of one category draws a subset of the
    larger's subjects, in its own style. Images are the native 64×64 RGB images of
    :func:`load_emoji`, byte-identical to the ``emoji`` dataset's (the quality stage finds and
    excludes them by hash).

    Args:
        n_holders: number of holders H, 1 … ``len(categories) · len(artists)``.
        sizes: images per holder, length H, each ≥ 1; None: :data:`DEFAULT_EMOJI_HOLDER_SIZES`
            for 8 holders, else 24, 32, 40, … .
        seed: seed of the default prices' order and of the subjects' order.
        reservation_prices_wei: per-holder prices in wei, length H, each ≥ 0; None: whole-token
            prices spread evenly from 5 to 40 tokens in a seeded order (as ``mnist_holders``).
        root: the ``node_modules`` folder holding the packages.
        artists: artist keys of :data:`ARTISTS`.
        categories: categories of :data:`CATEGORIES`.

    Returns:
        H holders with uint8 (n, 64, 64, 3) images.

    Raises:
        DataError: bad counts, sizes, prices, artists or categories, a category with fewer
            shared subjects than a holder needs, or as :func:`load_emoji`.
    """
    groups = [(c, a) for c in categories for a in artists]
    bad = [c for c in categories if c not in CATEGORIES]
    if bad or len(set(categories)) != len(categories):
        raise DataError(f"categories must be distinct names of {list(CATEGORIES)}, got {bad or list(categories)}")
    if not 1 <= n_holders <= len(groups):
        raise DataError(
            f"n_holders must lie in [1, {len(groups)}] ({len(categories)} categories × "
            f"{len(artists)} artists), got {n_holders}"
        )
    if sizes is None:
        sizes = (
            DEFAULT_EMOJI_HOLDER_SIZES
            if n_holders == len(DEFAULT_EMOJI_HOLDER_SIZES)
            else tuple(24 + 8 * h for h in range(n_holders))
        )
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) != n_holders or min(sizes) < 1:
        raise DataError(f"sizes must be {n_holders} counts >= 1, got {list(sizes)}")
    rng = np.random.default_rng(seed)
    prices = _prices(rng, n_holders, reservation_prices_wei)
    art = load_emoji(tuple(artists), root)
    labels = art.labels
    order = {c: _shared_subjects(art, c, artists, rng) for c in categories}
    holders = []
    for h, ((category, key), size) in enumerate(zip(groups[:n_holders], sizes, strict=True)):
        artist = ARTISTS[key]
        name = f"{artist.label}-{_SHORT[category]}"
        subjects = order[category]
        if size > len(subjects):
            raise DataError(
                f"{name}: needs {size} emoji, {category!r} has {len(subjects)} that every "
                f"artist of {list(artists)} draws; use smaller sizes"
            )
        mine = np.flatnonzero((art.artists == key) & (art.categories == category))
        by_code = {art.codes[i]: i for i in mine}
        index = np.array([by_code[code] for code in subjects[:size]], dtype=np.int64)
        holders.append(
            Holder(
                name=name,
                address=holder_address(name),
                reservation_price_wei=prices[h],
                images=art.images[index],
                labels=labels[index],
                captions=tuple(art.captions[i] for i in index),
                licence=artist.licence,
                attribution=artist.attribution,
            )
        )
    return holders


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _prices(
    rng: np.random.Generator, n_holders: int, prices: Sequence[int] | None
) -> list[int]:
    """Per-holder prices in wei (``split_holders``'s default rule when None)."""
    if prices is None:
        tokens = np.rint(np.linspace(5, 40, n_holders)).astype(np.int64)
        return [int(t) * WEI_PER_TOKEN for t in rng.permutation(tokens)]
    chosen = [int(p) for p in prices]
    if len(chosen) != n_holders:
        raise DataError(f"reservation_prices_wei has {len(chosen)} entries for {n_holders} holders")
    return chosen


def _shared_subjects(
    art: EmojiArt, category: str, artists: Sequence[str], rng: np.random.Generator
) -> list[str]:
    """Codes of ``category``'s emoji that every artist draws, sorted then seeded-shuffled."""
    in_category = art.categories == category
    shared = set.intersection(*(set(art.codes[in_category & (art.artists == a)]) for a in artists))
    codes = sorted(shared)
    return [codes[i] for i in rng.permutation(len(codes))]


def _package_dir(root: Path, artist: Artist) -> Path:
    """``root/<package>``, checked to be the pinned version.

    Raises:
        DataError: missing, unreadable, or another version; naming the package and ``npm ci``.
    """
    folder = root / artist.package
    meta_path = folder / "package.json"
    if not meta_path.is_file():
        raise DataError(
            f"the emoji images of {artist.key!r} need the npm package {artist.package}@"
            f"{artist.version}, which is not in {root}; {INSTALL_HINT}"
        )
    try:
        version = json.loads(meta_path.read_text()).get("version")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise DataError(f"{meta_path}: unreadable ({exc}); {INSTALL_HINT}") from exc
    if version != artist.version:
        raise DataError(
            f"{folder} is {artist.package}@{version}, the project pins {artist.version} (the "
            f"image checksums depend on it); {INSTALL_HINT}"
        )
    return folder


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable emoji metadata ({exc}); {INSTALL_HINT}") from exc


def _subject_code(code: str) -> str:
    """Upper-case code points joined by ``-``, variation selector ``FE0F`` dropped."""
    return "-".join(p for p in code.upper().split("-") if p != "FE0F")


@lru_cache(maxsize=16)
def _load_artist(root: str, key: str, size: int) -> EmojiArt:
    """One artist's emoji (read-only arrays; cached for the process)."""
    artist = ARTISTS[key]
    folder = _package_dir(Path(root), artist)
    entries = _openmoji_entries(folder) if key == "openmoji" else _datasource_entries(folder, key)
    if key == "openmoji":
        images = _cached_images(Path(root), folder, entries, size)
    else:
        images = _read_images(folder, entries, size)
    logger.info("emoji: %d images of %s from %s", len(entries), artist.package, folder)
    return EmojiArt(
        images=_read_only(images),
        captions=tuple(
            validate_caption(e["name"].lower(), f"{folder / e['file']}: name") for e in entries
        ),
        artists=_read_only(np.full(len(entries), key)),
        categories=_read_only(np.array([e["category"] for e in entries], dtype=str)),
        codes=_read_only(np.array([e["code"] for e in entries], dtype=str)),
        files=tuple(f"{artist.package}/{e['file']}" for e in entries),
    )


def _read_images(folder: Path, entries: Sequence[dict[str, str]], size: int) -> np.ndarray:
    """uint8 (len(entries), size, size, 3) images of ``entries``' files under ``folder``."""
    images = np.empty((len(entries), size, size, 3), np.uint8)
    for i, entry in enumerate(entries):
        images[i] = _read_emoji(folder / entry["file"], size)
    return images


def _cached_images(
    root: Path, folder: Path, entries: Sequence[dict[str, str]], size: int
) -> np.ndarray:
    """:func:`_read_images`, kept in ``root/.cache/offchain-emoji/`` under a key of everything
    the pixels depend on; an unreadable or mismatched cache file is rebuilt, an unwritable
    cache folder only logged."""
    key = hashlib.sha256()
    for part in (
        (folder / "package.json").read_bytes(),
        json.dumps(entries, sort_keys=True).encode(),
        metadata.version("resvg-py").encode(),
        f"size={size};composite=white;fonts=none".encode(),
    ):
        key.update(hashlib.sha256(part).digest())
    path = root / CACHE_DIR / f"{folder.name}-{size}px-{key.hexdigest()[:16]}.npy"
    shape = (len(entries), size, size, 3)
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.dtype == np.uint8 and cached.shape == shape:
                return cached
            logger.warning("%s: cached emoji of shape %s, expected %s; rebuilding", path, cached.shape, shape)
        except (OSError, ValueError) as exc:
            logger.warning("%s: unreadable emoji cache (%s); rebuilding", path, exc)
    images = _read_images(folder, entries, size)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
            np.save(tmp, images)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except OSError as exc:
        logger.warning("cannot cache the rasterised emoji in %s (%s)", path.parent, exc)
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
    return images


def _datasource_entries(folder: Path, key: str) -> list[dict[str, str]]:
    """Base emoji of an emoji-datasource package that have the artist's image."""
    table = _read_json(folder / "emoji.json")
    if not isinstance(table, list):
        raise DataError(f"{folder / 'emoji.json'}: expected a list of emoji; {INSTALL_HINT}")
    chosen = sorted(
        (e for e in table if e.get("category") in _SHORT and e.get(f"has_img_{key}")),
        key=lambda e: e["sort_order"],
    )
    return [
        {
            "file": f"img/{key}/64/{e['image']}",
            "name": e["name"],
            "category": e["category"],
            "code": _subject_code(e["unified"]),
        }
        for e in chosen
    ]


def _openmoji_entries(folder: Path) -> list[dict[str, str]]:
    """OpenMoji's Unicode emoji without skin tones (its extras-* groups left out)."""
    table = _read_json(folder / "data" / "openmoji.json")
    if not isinstance(table, list):
        raise DataError(f"{folder / 'data/openmoji.json'}: expected a list; {INSTALL_HINT}")
    chosen = sorted(
        (e for e in table if e.get("group") in _OPENMOJI_GROUPS and not e.get("skintone")),
        key=lambda e: e["order"],
    )
    return [
        {
            "file": f"color/svg/{e['hexcode']}.svg",
            "name": e["annotation"],
            "category": _OPENMOJI_GROUPS[e["group"]],
            "code": _subject_code(e["hexcode"]),
        }
        for e in chosen
    ]


def _read_emoji(path: Path, size: int) -> np.ndarray:
    """uint8 (size, size, 3) RGB of one PNG or SVG emoji file, composited on white."""
    try:
        if path.suffix == ".svg":
            data = io.BytesIO(_rasterise_svg(path, size))
        else:
            data = path
        with Image.open(data) as img:
            rgb = decode_rgb(img)
    except IMAGE_DECODE_ERRORS as exc:
        raise DataError(f"{path}: unreadable emoji image ({exc}); {INSTALL_HINT}") from exc
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _rasterise_svg(path: Path, size: int) -> bytes:
    """PNG bytes (RGBA, size × size) of the SVG at ``path``, rendered by resvg without system
    fonts (the pixels do not depend on the machine's fonts)."""
    try:
        import resvg_py
    except ImportError as exc:  # a core dependency; missing only in a broken environment
        raise DataError(
            "OpenMoji's SVGs need the SVG rasteriser resvg-py (a project dependency); "
            "run `pip install -e .` or scripts/setup.sh"
        ) from exc
    try:
        return bytes(
            resvg_py.svg_to_bytes(
                svg_path=str(path), width=size, height=size, skip_system_fonts=True
            )
        )
    except ValueError as exc:
        raise DataError(f"{path}: resvg cannot render this SVG ({exc})") from exc
