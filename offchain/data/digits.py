"""scikit-learn's optical digits (UCI) as a labelled dataset; bundled with scikit-learn."""

from __future__ import annotations

import numpy as np

__all__ = ["digits_images"]


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's optical digits (``sklearn.datasets.load_digits``).

    1,797 images of 8×8 pixels with values 0..16, scaled to uint8 by ``round(x · 255 / 16)``.

    Returns:
        ``(images, labels)``: uint8 (1797, 8, 8), 0 = black, and int64 (1797,) digits 0..9.
    """
    from sklearn.datasets import load_digits  # heavy import, kept out of the CLI's start

    bunch = load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0))
    return np.clip(images, 0, 255).astype(np.uint8), np.asarray(bunch.target, np.int64)
