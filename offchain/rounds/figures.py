"""A round's picture: its generations, with the prompts they came from, next to holders' works.

:func:`generations_figure` writes ``generations.png`` (:attr:`offchain.layout.RoundPaths.
generations_png`) from arrays in memory, so the ``generate`` stage writes it before its own
marker artifact (``samples.npy``). Left: up to :data:`MAX_GENERATIONS` of the round's
generations, each titled with its prompt (a conditional backend) or unnamed (an
unconditional one). Right: up to :data:`WORKS_PER_HOLDER` training works of each participating
holder, one row per holder, titled with the holder's name and the works' captions. Drawn with
matplotlib (as ``payments.png``), imported when called.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from offchain.errors import DataError
from offchain.utils import atomic_write

__all__ = ["MAX_GENERATIONS", "WORKS_PER_HOLDER", "generations_figure", "to_display"]

MAX_GENERATIONS = 16
"""Generations shown (the first ones of ``samples.npy``, in order)."""

WORKS_PER_HOLDER = 4
"""Training works shown per participating holder (its first ones in the training set)."""

_TITLE_CHARS = 16
"""Characters per line of a prompt or caption under an image (two lines at most)."""


def to_display(images: np.ndarray) -> np.ndarray:
    """Model images float (M, C, S, S) in [−1, 1] (C = 1 or 3) or uint8 holder images (N, H, W)
    / (N, H, W, 3) as uint8 (n, H, W) or (n, H, W, 3), the way an image viewer shows them.

    Raises:
        DataError: any other shape or dtype.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8 and (images.ndim == 3 or (images.ndim == 4
                                                          and images.shape[3] == 3)):
        return images
    if images.ndim == 4 and images.shape[1] in (1, 3) and np.issubdtype(images.dtype,
                                                                         np.floating):
        pixels = np.rint((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
        pixels = np.moveaxis(pixels, 1, -1)
        return pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    raise DataError(
        f"cannot show images of dtype {images.dtype} and shape {images.shape}: need float "
        "(M, 1 or 3, S, S) or uint8 (N, H, W[, 3])"
    )


def _title(text: str) -> str:
    return "\n".join(textwrap.wrap(text, _TITLE_CHARS, max_lines=2, placeholder="…"))


def _show(ax, image: np.ndarray, title: str | None) -> None:  # ax: a matplotlib Axes
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(_title(title), fontsize=6, pad=2)


def generations_figure(
    out: Path,
    samples: np.ndarray,
    prompts: Sequence[str] | None,
    train_images: np.ndarray,
    holder_index: np.ndarray,
    train_captions: Sequence[str],
    holder_names: Sequence[str],
    title: str,
) -> Path:
    """Write the round's grid of generations next to holders' works as a PNG (atomically).

    Args:
        out: the PNG's path (``generations.png``).
        samples: float32 (M, C, S, S) in [−1, 1], the round's generations.
        prompts: M prompts the generations came from, or None (unconditional).
        train_images: uint8 (N, H, W) or (N, H, W, 3), the round's training works.
        holder_index: int (N,) holder of each training work.
        train_captions: N captions ("" = none).
        holder_names: the names of all holders (indexed by ``holder_index``).
        title: the figure's title.

    Returns:
        ``out``.

    Raises:
        DataError: images of a shape or dtype that cannot be shown, or lengths that differ.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = to_display(samples)[:MAX_GENERATIONS]
    works = to_display(train_images)
    holder_index = np.asarray(holder_index)
    if len(holder_index) != len(works) or len(train_captions) != len(works):
        raise DataError(f"{len(works)} training images but {len(holder_index)} holder indices "
                        f"and {len(train_captions)} captions")
    if prompts is not None and len(prompts) < len(shown):
        raise DataError(f"{len(shown)} generations shown but only {len(prompts)} prompts")
    holders = [int(h) for h in dict.fromkeys(holder_index.tolist())]  # in training-set order
    gen_cols = min(4, max(len(shown), 1))
    gen_rows = -(-len(shown) // gen_cols)
    rows = max(gen_rows, len(holders))
    fig = plt.figure(figsize=(1.1 * (gen_cols + WORKS_PER_HOLDER) + 0.8, 1.15 * rows + 0.7))
    left, right = fig.subfigures(1, 2, width_ratios=[gen_cols, WORKS_PER_HOLDER], wspace=0.05)
    left.suptitle("generations" + (" (prompt above each)" if prompts is not None else ""),
                  fontsize=8)
    right.suptitle("holders' works (caption above each)", fontsize=8)
    gen_axes = left.subplots(rows, gen_cols, squeeze=False)
    for i, ax in enumerate(gen_axes.flat):
        if i < len(shown):
            _show(ax, shown[i], prompts[i] if prompts is not None else None)
        else:
            ax.axis("off")
    work_axes = right.subplots(rows, WORKS_PER_HOLDER, squeeze=False)
    for r, row in enumerate(work_axes):
        picked = np.flatnonzero(holder_index == holders[r])[:WORKS_PER_HOLDER] if r < len(
            holders) else []
        for c, ax in enumerate(row):
            if c < len(picked):
                _show(ax, works[picked[c]], train_captions[picked[c]] or None)
            else:
                ax.axis("off")
        if len(picked):
            row[0].set_ylabel(holder_names[holders[r]], fontsize=6, rotation=0, ha="right",
                              va="center")
    fig.suptitle(title, fontsize=9, y=1.04)
    target = Path(out)
    atomic_write(target, lambda tmp: fig.savefig(tmp, format="png", dpi=100,
                                                 bbox_inches="tight"))
    plt.close(fig)
    return target
