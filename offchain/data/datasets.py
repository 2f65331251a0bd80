"""Labelled image datasets by name: the registry that holder splits and the quality stage ask.

A dataset source (:data:`DatasetSource`) is a function that loads one labelled image set::

    source(**options) -> (images, labels)
        images  uint8 (N, H, W) grayscale, 0 = black, or uint8 (N, H, W, 3) RGB, at the
                dataset's native resolution
        labels  int64 (N,), class of each image

Built-in sources (:func:`dataset_names`):

* ``"mnist"``   :func:`offchain.data.mnist.load_mnist`, the shipped MNIST test split
  (10,000 digits of 28×28); option ``root``, the folder of the MNIST files.
* ``"digits"``  :func:`offchain.data.digits.digits_images`, scikit-learn's 1,797 optical digits
  of 8×8.
* ``"lfw"``     :func:`offchain.data.lfw.lfw_images`, scikit-image's LFW subset, 200 images of
  25×25, face = 1 / non-face = 0.
* ``"folders"`` :func:`offchain.data.folders.holder_folder_images`, a user's holder folders
  (option ``root``, required; ``channels=3`` for color); the label of an image is its holder's
  index.
* ``"emoji"``   :func:`offchain.data.emoji.emoji_images`, openly licensed emoji art of Noto,
  Twemoji and OpenMoji from the project's ``node_modules`` (5,726 RGB images of 64×64);
  label = Unicode category index (:data:`offchain.data.emoji.CATEGORIES`).

Adding a dataset is one new module with one such function plus one entry in ``_SOURCES`` below;
code that cannot edit this module (a test, a plug-in) calls :func:`register_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from offchain.data.digits import digits_images
from offchain.data.emoji import emoji_images
from offchain.data.folders import holder_folder_images
from offchain.data.lfw import lfw_images
from offchain.data.mnist import load_mnist
from offchain.errors import ConfigError, DataError

__all__ = [
    "DatasetSource",
    "check_labelled_images",
    "dataset_names",
    "get_dataset",
    "load_dataset",
    "register_dataset",
]

DatasetSource = Callable[..., tuple[np.ndarray, np.ndarray]]
"""``source(**options) -> (images uint8 (N, H, W) or (N, H, W, 3), labels int64 (N,))``; options are the
source's own (``root`` for ``mnist`` and ``folders``), and every option has a default except
where the source says it needs one."""

_SOURCES: dict[str, DatasetSource] = {
    "mnist": load_mnist,
    "digits": digits_images,
    "lfw": lfw_images,
    "folders": holder_folder_images,
    "emoji": emoji_images,
}


def register_dataset(name: str, source: DatasetSource) -> DatasetSource:
    """Make ``source`` loadable as dataset ``name`` (by :func:`load_dataset` and its callers).

    Registering the same function under the same name again does nothing.

    Returns:
        ``source``, unchanged.

    Raises:
        ConfigError: ``name`` is empty, or another source already has it.
    """
    if not name:
        raise ConfigError("a dataset needs a non-empty name")
    known = _SOURCES.get(name)
    if known is not None and known is not source:
        raise ConfigError(f"dataset {name!r} is already registered ({known.__qualname__})")
    _SOURCES[name] = source
    return source


def dataset_names() -> tuple[str, ...]:
    """Names of the registered datasets, sorted."""
    return tuple(sorted(_SOURCES))


def get_dataset(name: str) -> DatasetSource:
    """The source registered as ``name``.

    Raises:
        ConfigError: unknown ``name``, naming the registered ones.
    """
    try:
        return _SOURCES[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; expected one of {dataset_names()}"
        ) from None


def load_dataset(name: str, **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """Load dataset ``name`` through its source, with the source's ``options``.

    Returns:
        ``(images, labels)``: uint8 (N, H, W) grayscale images, 0 = black, or uint8
        (N, H, W, 3) RGB, and int64 (N,) labels, fresh
        arrays at the dataset's native resolution.

    Raises:
        ConfigError: unknown ``name``, or options the source refuses.
        DataError: the source's files are missing or corrupt, or it returned arrays of other
            shapes or dtypes.
    """
    images, labels = get_dataset(name)(**options)
    check_labelled_images(images, labels)
    return images, labels


def check_labelled_images(images: np.ndarray, labels: np.ndarray) -> None:
    """Refuse anything but uint8 (N, H, W) grayscale or (N, H, W, 3) RGB images with integer
    (N,) labels.

    Raises:
        DataError: naming the dtype and shape found.
    """
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3))
    ):
        raise DataError(
            "images must be a uint8 array of shape (N, H, W) or (N, H, W, 3), got "
            f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        )
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"labels must be integers of shape ({len(images)},), got {labels.dtype} {labels.shape}"
        )
