"""scikit-image's LFW subset as a labelled face / non-face dataset; bundled with scikit-image."""

from __future__ import annotations

import numpy as np

__all__ = ["lfw_images"]


def lfw_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's LFW subset (``skimage.data.lfw_subset``).

    200 float images of 25×25 in [0, 1], scaled to uint8 by ``round(x · 255)``; the first 100
    are faces (label 1), the last 100 non-faces (label 0).

    Returns:
        ``(images, labels)``: uint8 (200, 25, 25), 0 = black, and int64 (200,) labels.
    """
    from skimage.data import lfw_subset  # heavy import, kept out of the CLI's start

    faces = np.asarray(lfw_subset(), dtype=np.float64)
    images = np.clip(np.rint(faces * 255.0), 0, 255).astype(np.uint8)
    n_faces = len(images) // 2  # documented: first 100 faces, last 100 non-faces
    labels = np.zeros(len(images), dtype=np.int64)
    labels[:n_faces] = 1
    return images, labels
