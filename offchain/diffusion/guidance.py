"""What the text-conditioned backends share: the caption list check and classifier-free
guidance (Ho & Salimans, "Classifier-Free Diffusion Guidance", 2022).

Both act on a conditional wrapper module ``model(x, timesteps, caption_ids)`` → ``.sample``
that carries its null caption's token ids as ``model.null_ids`` (int64 (1, L)): the
``text-unet`` wrapper in pixel space, the ``sd-lora`` wrapper in latent space.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from offchain.diffusion.device import autocast
from offchain.errors import DataError

__all__ = ["check_captions", "guided_noise"]


def check_captions(captions: Sequence[str] | None, n: int) -> list[str]:
    """``captions`` as a list of ``n`` strings (None: ``n`` null captions, "").

    Raises:
        DataError: one string instead of a list, a length other than ``n``, or a non-string.
    """
    if captions is None:
        return [""] * n
    if isinstance(captions, str) or len(captions) != n:
        raise DataError(f"captions must be {n} strings (one per image), got "
                        f"{'one string' if isinstance(captions, str) else len(captions)}")
    bad = [i for i, c in enumerate(captions) if not isinstance(c, str)]
    if bad:
        raise DataError(f"caption {bad[0]} is a {type(captions[bad[0]]).__name__}, not a string")
    return list(captions)


def guided_noise(model: nn.Module, x: Tensor, t: Tensor, ids: Tensor, w: float) -> Tensor:
    """ε̂ = ε(x, ∅) + w · (ε(x, c) − ε(x, ∅)), float32 shaped like ``x`` (B, C, S, S).

    ``ids`` int64 (B, L) are the captions' token ids; w = 0 (or only null captions) and w = 1
    need one pass, any other scale one batched pass of the conditional and null halves. Runs
    under :func:`~offchain.diffusion.device.autocast` of ``x``'s device.
    """
    null = model.null_ids.expand_as(ids)
    with autocast(x.device):
        if w == 0.0 or bool((ids == null).all()):
            return model(x, t, null).sample.float()
        if w == 1.0:
            return model(x, t, ids).sample.float()
        both = model(torch.cat([x, x]), t, torch.cat([ids, null])).sample.float()
    cond, uncond = both.chunk(2)
    return uncond + w * (cond - uncond)
