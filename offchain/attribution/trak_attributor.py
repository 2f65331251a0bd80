"""The ``trak`` attributor: TRAK / D-TRAK scores (:mod:`offchain.attribution.trak`) as an
:class:`~offchain.attribution.base.Attributor`, with the TRAK ensemble for E > 1."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offchain.attribution.base import SCORES_FILE
from offchain.attribution.defaults import DEFAULT_TRAK_ENSEMBLE, ENSEMBLE_SEED_STRIDE
from offchain.attribution.trak import (
    TrakConfig,
    compute_trak_ensemble,
    compute_trak_scores,
    ensemble_member_dir,
    featurize_trak,
    holder_contributions,
    resolve_device,
)
from offchain.diffusion.backend import DenoisingModel
from offchain.errors import ConfigError, DataError

__all__ = ["ACTIVATION_BUDGET", "TrakAttributor", "caption_token_ids", "featurize_batch_size"]


def caption_token_ids(
    model: DenoisingModel, captions: Sequence[str] | None, n: int, what: str
) -> torch.Tensor | None:
    """The token ids a conditional model attributes ``captions`` with, int64 (n, L); None for
    an unconditional model (``model.encode_captions`` is None), whatever ``captions`` holds.

    Args:
        model: the loaded checkpoint.
        captions: n strings ("" = the null caption), or None: n null captions.
        n: the number of images the captions belong to.
        what: ``"train"`` or ``"target"``, for error messages.

    Raises:
        DataError: ``captions`` is a single string or not n long, or the tokenizer returned
            something other than an integer tensor (n, L).
    """
    if model.encode_captions is None:
        return None
    if captions is None:
        captions = [""] * n
    if isinstance(captions, str) or len(captions) != n:
        got = "a string" if isinstance(captions, str) else f"{len(captions)} captions"
        raise DataError(f"{what}_captions must be {n} strings, one per {what} image; got {got}")
    ids = torch.as_tensor(model.encode_captions(list(captions)))
    if ids.ndim != 2 or ids.shape[0] != n or ids.dtype.is_floating_point:
        raise DataError(
            f"encode_captions returned {ids.dtype} {tuple(ids.shape)} for {n} {what} captions; "
            "expected integer token ids (n, L)"
        )
    return ids.to(torch.int64)


ACTIVATION_BUDGET = 2**18
"""Pixels × timesteps per vmapped featurize batch (:func:`featurize_batch_size`)."""


def featurize_batch_size(sample_shape: tuple[int, ...], num_timesteps: int, largest: int) -> int:
    """Examples per vmapped per-example-gradient batch: the largest power of two ≤ ``largest``
    whose batch holds at most :data:`ACTIVATION_BUDGET` values of C·S·S·K (one example's
    images over the K timesteps), and at least 1.

    Activation memory grows with C·S·S·K per example: 16×16 grayscale with K = 4 keeps
    ``largest`` (32); 32×32 RGB gets 16, which measured on the emoji demo's round 1
    (``text-unet``, 440 works, proj_dim 512) cut the attribute stage's peak RSS from 3.8 to
    2.9 GiB and its time from 24.4 to 21.3 s. Features do not depend on the batching (the noise
    is drawn per example), so this changes memory and speed, not scores.
    """
    per_example = max(1, int(np.prod(sample_shape)) * int(num_timesteps))
    batch = 1
    while batch * 2 <= largest and batch * 2 * per_example <= ACTIVATION_BUDGET:
        batch *= 2
    return max(1, min(batch, largest))


def _from_main(images: Any, state: Any) -> torch.Tensor:
    """The main process's ``images`` (float32 (n, C, S, S), array or tensor) in every process
    of accelerate's ``state``, as a float32 CPU tensor (a broadcast over its process group)."""
    from accelerate.utils import broadcast

    tensor = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images,
                             dtype=torch.float32).contiguous().to(state.device)
    return broadcast(tensor, from_process=0).cpu()


class TrakAttributor:
    """TRAK with the D-TRAK or loss output function, one checkpoint, E seeds.

    Args:
        config: :class:`TrakConfig` (its ``seed`` is replaced by each call's); None: defaults.
        ensemble: E ≥ 1; E > 1 averages E members with seeds ``seed + 1000·k``
            (:func:`compute_trak_ensemble`), E = 1 is :func:`compute_trak_scores`.
        device: where the per-example gradients run: None (the CPU), a ``device`` setting
            (``"auto"``, ``"cpu"``, ``"cuda"``, :func:`~offchain.diffusion.device.select_device`)
            or a ``torch.device``. Gradients are float32 on every device (no autocast: the
            features are sums of tiny per-parameter products that bfloat16 would round away).
    """

    name = "trak"

    def __init__(
        self,
        config: TrakConfig | None = None,
        ensemble: int = DEFAULT_TRAK_ENSEMBLE,
        device: str | torch.device | None = None,
    ):
        if not isinstance(ensemble, int) or ensemble < 1:
            raise ConfigError(f"trak ensemble must be an int ≥ 1, got {ensemble!r}")
        self.config = config if config is not None else TrakConfig()
        self.ensemble = ensemble
        self.device = device

    @classmethod
    def from_settings(cls, settings: Any) -> TrakAttributor:
        """Reads ``proj_dim``, ``trak_timesteps`` (K, :attr:`TrakConfig.num_timesteps`),
        ``trak_output``, ``trak_ensemble`` and ``device``; the rest are :class:`TrakConfig`
        defaults."""
        config = TrakConfig(
            proj_dim=settings.proj_dim,
            num_timesteps=settings.trak_timesteps,
            output=settings.trak_output,
        )
        return cls(config, ensemble=settings.trak_ensemble, device=settings.device)

    def scores(
        self,
        model: DenoisingModel,
        train_images: Any,
        targets: Any,
        out_dir: Path,
        *,
        seed: int,
        progress: bool = True,
        train_captions: Sequence[str] | None = None,
        target_captions: Sequence[str] | None = None,
    ) -> np.ndarray:
        """τ float32 (M, N) of ``model.unet`` (its scheduler's ᾱ), saved as
        ``out_dir/scores.npy`` with TRAK's resumable artifacts (see
        :mod:`offchain.attribution.trak`).

        A conditional model (``model.encode_captions`` not None) is attributed with its
        captions: every training image's and target's caption is tokenized once
        (:func:`caption_token_ids`; None → all null captions) and the D-TRAK output
        differentiates ε_θ(x_t, t, c) over every parameter of ``model.unet`` (the stages and LDS
        pass :func:`~offchain.attribution.attributed_model.attributed_model`'s network, whose
        parameters are the backend's trainable ones: the UNet and caption encoder of
        ``text-unet``, the LoRA adapters of ``sd-lora``). An unconditional model ignores the captions (scores unchanged).

        Raises:
            DataError: a caption list whose length is not N (train) or M (targets), or token
                ids that are not int64 (n, L); as :func:`compute_trak_scores` otherwise.
        """
        cfg, captions = self._request(model, train_images, targets, seed, train_captions,
                                      target_captions)
        if self.ensemble > 1:
            seeds = [seed + ENSEMBLE_SEED_STRIDE * k for k in range(self.ensemble)]
            return compute_trak_ensemble(
                [(model.unet, model.scheduler)],
                train_images,
                targets,
                out_dir,
                cfg,
                seeds=seeds,
                progress=progress,
                device=self.device,
                **captions,
            )
        return compute_trak_scores(
            model.unet,
            model.scheduler,
            train_images,
            targets,
            out_dir,
            cfg,
            progress=progress,
            device=self.device,
            **captions,
        )

    def _request(
        self,
        model: DenoisingModel,
        train_images: Any,
        targets: Any,
        seed: int,
        train_captions: Sequence[str] | None,
        target_captions: Sequence[str] | None,
    ) -> tuple[TrakConfig, dict[str, torch.Tensor | None]]:
        """``(the run's TrakConfig: seed and featurize batch size, {train_caption_ids,
        target_caption_ids})`` as :meth:`scores` and :meth:`featurize` both use them."""
        cfg = replace(
            self.config,
            seed=seed,
            batch_size=featurize_batch_size(
                tuple(train_images.shape[1:]), self.config.num_timesteps, self.config.batch_size
            ),
        )
        n_train, n_targets = len(train_images), len(targets)
        captions = {
            "train_caption_ids": caption_token_ids(model, train_captions, n_train, "train"),
            "target_caption_ids": caption_token_ids(model, target_captions, n_targets, "target"),
        }
        return cfg, captions

    def featurize(
        self,
        model: DenoisingModel,
        train_images: Any,
        targets: Any,
        out_dir: Path,
        *,
        seed: int,
        progress: bool = True,
        train_captions: Sequence[str] | None = None,
        target_captions: Sequence[str] | None = None,
    ) -> dict[str, int]:
        """Fill the feature stores that :meth:`scores` with the same arguments reads, sharing
        the work among the processes of an ``accelerate launch`` (one process: all of it),
        without computing the kernel or the scores.

        Each process of the launch calls it with the same arguments; the examples are split by
        batch across processes into the one store per member and set (train, target), merged
        by the main process (:func:`~offchain.attribution.trak.featurize_trak`). Afterwards
        :meth:`scores` in one process finds every feature done and only finalises and scores:
        its scores equal a one-process run's (features bit-identical on the same device and
        thread count). Under a multi-GPU launch each process uses its own GPU when this
        attributor's device is CUDA (or ``auto`` with CUDA available).

        Returns:
            Rows this process computed, per store (``"train"``/``"target"``, prefixed by the
            member folder for E > 1).

        Raises:
            as :meth:`scores`.
        """
        from accelerate import PartialState

        cfg, captions = self._request(model, train_images, targets, seed, train_captions,
                                      target_captions)
        device = resolve_device(self.device)
        state = PartialState(cpu=device.type != "cuda")
        if state.num_processes > 1:
            if device.type == "cuda":
                device = state.device
            # every process featurizes the main process's inputs bit for bit (latents encoded
            # on different GPUs need not be; the stores' identity hashes them)
            train_images, targets = (_from_main(x, state) for x in (train_images, targets))
        common = {
            "progress": progress,
            "device": device,
            "rank": state.process_index,
            "world_size": state.num_processes,
            "barrier": state.wait_for_everyone,
            **captions,
        }
        out_dir = Path(out_dir)
        if self.ensemble == 1:
            return featurize_trak(model.unet, model.scheduler, train_images, targets, out_dir,
                                  cfg, **common)
        if (out_dir / SCORES_FILE).exists():
            return {}  # the ensemble is scored (scores() checks that it is this request's)
        computed: dict[str, int] = {}
        for k in range(self.ensemble):
            member_seed = seed + ENSEMBLE_SEED_STRIDE * k
            member = ensemble_member_dir(0, member_seed)
            rows = featurize_trak(model.unet, model.scheduler, train_images, targets,
                                  out_dir / member, replace(cfg, seed=member_seed), **common)
            computed.update({f"{member}/{name}": n for name, n in rows.items()})
        return computed

    def holder_contributions(
        self, scores: np.ndarray, holder_index: np.ndarray, n_holders: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`~offchain.attribution.trak.holder_contributions`: Σ τ over a holder's images,
        mean over targets; the positive parts normalised to sum to 1."""
        return holder_contributions(scores, holder_index, n_holders)

    def record(self) -> dict[str, Any]:
        """``output``, ``proj_dim``, ``num_timesteps`` (K) and ``ensemble`` (E)."""
        return {
            "output": self.config.output,
            "proj_dim": self.config.proj_dim,
            "num_timesteps": self.config.num_timesteps,
            "ensemble": self.ensemble,
        }
