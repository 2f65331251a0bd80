"""Held-out real images for the quality metric: holder images excluded, holder-disjoint splits.

The reference classifier and the FID reference statistics must never see a data holder's
images, or the metric would reward memorising them. The helpers here take a labelled real
dataset from the registry (:func:`offchain.data.datasets.load_dataset`: ``"mnist"``,
``"digits"``, ``"lfw"``, ``"emoji"`` or any registered one) at its native resolution as uint8
(N, H, W) grayscale or (N, H, W, 3) RGB, drop every image whose
:func:`offchain.data.holders.image_hash` belongs to a holder, and split the rest into a part
that trains the classifier and a disjoint part whose statistics are the FID reference.

For ``emoji`` the labels are the emoji's categories over every artist (Noto, Twemoji, …), and
the holders' images are the dataset's own 64×64 RGB images (:func:`offchain.data.emoji.
emoji_holders`), so every holder image is found by its hash and left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from offchain.data.datasets import check_labelled_images, load_dataset
from offchain.data.holders import Holder, image_hash
from offchain.errors import ConfigError, DataError

__all__ = [
    "exclude_images",
    "held_out_images",
    "split_reference",
]

logger = logging.getLogger(__name__)

def exclude_images(
    images: np.ndarray, labels: np.ndarray, hashes: Iterable[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Drop every image whose :func:`image_hash` is in ``hashes``.

    Hashes cover the shape and every pixel, so only byte-identical images (at the same
    resolution) match; an exact duplicate of a holder image elsewhere in ``images`` is dropped
    too.

    Args:
        images: uint8 (N, H, W) or (N, H, W, 3).
        labels: integer (N,).
        hashes: hex SHA-256 image hashes to exclude.

    Returns:
        ``(images, labels)`` of the kept images, in their original order (copies).

    Raises:
        DataError: bad shapes or dtypes, or nothing is left.
    """
    check_labelled_images(images, labels)
    excluded = set(hashes)
    keep = np.fromiter((image_hash(im) not in excluded for im in images), bool, len(images))
    if not keep.any():
        raise DataError(f"all {len(images)} images are excluded; nothing is held out")
    return images[keep].copy(), np.asarray(labels)[keep].astype(np.int64)


def held_out_images(
    holders: Sequence[Holder], name: str = "mnist"
) -> tuple[np.ndarray, np.ndarray]:
    """Images of dataset ``name`` that belong to none of ``holders``.

    For the MNIST demo the holders come from :func:`offchain.data.holders.mnist_holders`, whose
    images are byte-identical to MNIST test images, and for the emoji campaign from
    :func:`offchain.data.emoji.emoji_holders`, byte-identical to the ``emoji`` dataset's 64×64
    RGB images: every holder image is found and dropped.
    Holder images at another resolution (e.g. resized by ``load_holder_folders``) cannot be
    matched: a warning is logged when some holder hashes match no image.

    Args:
        holders: the campaign's holders (their :attr:`Holder.image_hashes` are excluded).
        name: a registered dataset (:func:`offchain.data.datasets.dataset_names`) that loads
            without options.

    Returns:
        ``(images, labels)``: uint8 (N', H, W) or (N', H, W, 3) and int64 (N',) of the
        held-out images.

    Raises:
        ConfigError: unknown dataset name, or one that needs options (``folders``).
        DataError: the dataset's files are missing or corrupt, or nothing is left.
    """
    images, labels = load_dataset(name)
    hashes = {h for holder in holders for h in holder.image_hashes}
    kept_images, kept_labels = exclude_images(images, labels, hashes)
    n_removed = len(images) - len(kept_images)
    if hashes and n_removed < len(hashes):
        logger.warning(
            "%d of %d holder image hashes match no %s image (other resolution or source?); "
            "they cannot be excluded from the held-out set",
            len(hashes) - n_removed,
            len(hashes),
            name,
        )
    logger.info(
        "%s: %d of %d images held out from %d holders",
        name,
        len(kept_images),
        len(images),
        len(holders),
    )
    return kept_images, kept_labels


def split_reference(
    images: np.ndarray,
    labels: np.ndarray,
    classifier_fraction: float = 0.5,
    seed: int = 0,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Split held-out images, stratified by label, into a classifier part and a reference part.

    The classifier trains on the first part; the FID reference statistics come from the second,
    so real reference features are not features of images the classifier has fitted. Within
    each class, a seeded permutation sends ``round(classifier_fraction · n_class)`` images to
    the classifier part (at least one to each part when the class has two or more).

    Args:
        images: uint8 (N, H, W) or (N, H, W, 3).
        labels: integer (N,).
        classifier_fraction: share in (0, 1) of each class for the classifier.
        seed: seed of the permutation.

    Returns:
        ``((classifier_images, classifier_labels), (reference_images, reference_labels))``,
        each part in original order.

    Raises:
        ConfigError: ``classifier_fraction`` outside (0, 1).
        DataError: bad shapes or dtypes, or a part would be empty.
    """
    check_labelled_images(images, labels)
    if not 0.0 < classifier_fraction < 1.0:
        raise ConfigError(f"classifier_fraction must be in (0, 1), got {classifier_fraction}")
    labels = np.asarray(labels).astype(np.int64)
    rng = np.random.default_rng(seed)
    to_classifier = np.zeros(len(images), dtype=bool)
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        take = int(round(classifier_fraction * len(idx)))
        if len(idx) >= 2:
            take = min(max(take, 1), len(idx) - 1)
        to_classifier[idx[:take]] = True
    if to_classifier.all() or not to_classifier.any():
        raise DataError(f"cannot split {len(images)} images into two non-empty parts")
    return (
        (images[to_classifier].copy(), labels[to_classifier]),
        (images[~to_classifier].copy(), labels[~to_classifier]),
    )
