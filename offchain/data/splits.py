"""Holders split from any registered labelled dataset (:mod:`offchain.data.datasets`).

The split itself is :func:`offchain.data.holders.split_holders`, the one behind
:func:`offchain.data.holders.mnist_holders`; here the images come from the dataset registry and
the default sizes leave about half of a small dataset to the quality stage. A dataset whose
holders follow their own rule (``emoji``: artist × category groups,
:func:`offchain.data.emoji.emoji_holders`) is listed in :data:`HOLDER_RULES` and split by it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from offchain.data.datasets import get_dataset, load_dataset
from offchain.data.emoji import emoji_holders
from offchain.data.holders import Holder, default_holder_sizes, split_holders
from offchain.errors import DataError

__all__ = ["HOLDER_RULES", "MAX_HOLDER_SHARE", "dataset_holder_sizes", "dataset_holders"]

HOLDER_RULES: dict[str, Callable[..., list[Holder]]] = {"emoji": emoji_holders}
"""Datasets whose holders are not a class-mix split: name → ``rule(n_holders, sizes, seed,
reservation_prices_wei)`` returning the holders."""

MAX_HOLDER_SHARE = 0.5
"""Default holder sizes take at most this share of a dataset: the rest is held out for the
quality stage's reference classifier and FID statistics."""


def dataset_holder_sizes(n_holders: int, n_available: int) -> tuple[int, ...]:
    """Default images per holder for a dataset of ``n_available`` images.

    :func:`~offchain.data.holders.default_holder_sizes` ``(n_holders)``, scaled down
    (``round(size · f)``, at least 1) with ``f = min(1, MAX_HOLDER_SHARE · n_available / Σ sizes)``
    so that the holders take about half the dataset at most. For 8 holders: MNIST (10,000
    images) and scikit-learn digits (1,797) keep
    :data:`~offchain.data.holders.DEFAULT_HOLDER_SIZES` (512 images); the LFW subset (200) gets
    (5, 6, 8, 9, 12, 16, 19, 25), 100 images, the other 100 held out.
    """
    sizes = default_holder_sizes(n_holders)
    factor = min(1.0, MAX_HOLDER_SHARE * n_available / sum(sizes))
    if factor >= 1.0:
        return sizes
    return tuple(max(1, round(s * factor)) for s in sizes)


def dataset_holders(
    dataset: str,
    n_holders: int = 8,
    sizes: Sequence[int] | None = None,
    seed: int = 0,
    reservation_prices_wei: Sequence[int] | None = None,
) -> list[Holder]:
    """Split a registered labelled dataset among holders, as ``mnist_holders`` does MNIST.

    ``dataset`` is a name of :func:`offchain.data.datasets.dataset_names` that loads without
    options: ``"mnist"`` (the MNIST test split, 28×28), ``"digits"`` (scikit-learn's 8×8
    optical digits) or ``"lfw"`` (scikit-image's 25×25 LFW subset, face = 1 / non-face = 0),
    loaded at native resolution by :func:`offchain.data.datasets.load_dataset`; the round
    stages resize to the model's side (:func:`offchain.diffusion.preprocess`), and the quality
    stage finds the holders' images in the same dataset by hash and holds the rest out. Class
    mixes: with at least four classes a holder's 70 % dominant share comes from its two
    :func:`~offchain.data.holders.dominant_classes`, exactly as in ``mnist_holders`` (so
    ``dataset_holders("mnist", …)`` equals ``mnist_holders(…)`` for the same arguments, the
    defaults included); with fewer classes (LFW's two) it comes from one class, ``h mod K``,
    and the other 30 % from the remaining classes. Grayscale (N, H, W) and RGB (N, H, W, 3)
    datasets split alike. A dataset of :data:`HOLDER_RULES` is split by its own rule instead:
    ``dataset_holders("emoji", …)`` is :func:`offchain.data.emoji.emoji_holders` ``(…)``
    (holders ``noto-smileys``, ``twemoji-smileys``, … with captions and licences).

    Args:
        dataset: a registered dataset name.
        n_holders: number of holders H ≥ 1.
        sizes: images per holder; None: :func:`dataset_holder_sizes` (at most about half the
            dataset, so the quality stage keeps held-out images).
        seed: seed of the split and of the default prices' order.
        reservation_prices_wei: per-holder prices in wei; None: 5 … 40 tokens, seeded order.

    Returns:
        H holders ``holder_<h>`` (or the rule's names) with labels and demo addresses
        (:func:`~offchain.data.holders.holder_address`).

    Raises:
        ConfigError: unknown ``dataset``, or one that needs options (``folders``).
        DataError: bad sizes or prices, or a class pool runs out of images.
    """
    get_dataset(dataset)  # an unknown name is refused before anything else
    if n_holders < 1:
        raise DataError(f"n_holders must be >= 1, got {n_holders}")
    if dataset in HOLDER_RULES:
        return HOLDER_RULES[dataset](n_holders, sizes, seed, reservation_prices_wei)
    images, labels = load_dataset(dataset)
    if sizes is None:
        sizes = dataset_holder_sizes(n_holders, len(images))
    return split_holders(
        lambda: (images, labels), dataset, n_holders, sizes, seed, reservation_prices_wei
    )
