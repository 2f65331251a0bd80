"""A user's holder folders as a labelled dataset: each image labelled with its holder's index."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from offchain.data.holders import load_holder_folders, training_set
from offchain.errors import ConfigError

__all__ = ["holder_folder_images"]


def holder_folder_images(
    root: Path | None = None, image_size: int | tuple[int, int] = 28, channels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Every image of the holder folders under ``root``, labelled with its holder.

    The holders are :func:`offchain.data.holders.load_holder_folders`
    ``(root, image_size, channels=channels)``
    (sorted by name, images resized to ``image_size``); their images are stacked in holder order
    by :func:`offchain.data.holders.training_set`.

    Args:
        root: folder of holder folders (``root/<name>/*.png``); required.
        image_size: side (int) or ``(height, width)`` in pixels of every image.
        channels: 1 for grayscale (the default), 3 for RGB composited on white.

    Returns:
        ``(images, labels)``: uint8 (N, height, width), 0 = black, or (N, height, width, 3)
        RGB, and int64 (N,), the index of each image's holder in name order.

    Raises:
        ConfigError: no ``root``.
        DataError: as :func:`offchain.data.holders.load_holder_folders`.
    """
    if root is None:
        raise ConfigError("dataset 'folders' needs root, the folder of holder folders")
    return training_set(load_holder_folders(Path(root), image_size, channels=channels))
