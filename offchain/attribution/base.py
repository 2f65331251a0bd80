"""The attributor of a round: a small protocol and a registry of implementations by name.

An :class:`Attributor` scores every target (a generated sample) against every training example
and aggregates the scores per holder; the attribute stage
(:func:`offchain.rounds.stages.attribute`) asks the registry for ``MLConfig.attributor`` and
knows nothing else about it. TRAK (:mod:`offchain.attribution.trak_attributor`) is registered
as ``trak``.

Adding an attributor is one new module with a class satisfying :class:`Attributor`, plus one
line here (``register_attributor("<name>", "<module>:<Class>")``) — or, outside the package (a
test, a plug-in), ``@register_attributor("<name>")`` on the class. Built-ins are imported on
first :func:`get_attributor`, so this module (and the CLI that imports it) stays torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from offchain.diffusion.backend import DenoisingModel
from offchain.registry import Registry

__all__ = [
    "SCORES_FILE",
    "Attributor",
    "attributor_names",
    "get_attributor",
    "register_attributor",
]

SCORES_FILE = "scores.npy"
"""The scores' file name inside an attributor's output folder (the round's provenance
``attribution_hash`` is the SHA-256 of this file)."""


@runtime_checkable
class Attributor(Protocol):
    """Scores of targets against training examples, and their per-holder aggregation."""

    name: str
    """The registry name (``"trak"``)."""

    @classmethod
    def from_settings(cls, settings: Any) -> Attributor:
        """The attributor for a run's ML settings (:class:`offchain.rounds.config.MLConfig`;
        each implementation documents the fields it reads)."""
        ...

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
        """τ, float32 (M, N): ``scores[m, i]`` is training example i's attribution to target m
        (positive: i supports m), for the round's ``model``.

        Args:
            model: the round's loaded checkpoint.
            train_images: float32 (N, C, S, S), in holder order (tensor or array): the x_0 the
                model's ``unet`` denoises, pixels in [−1, 1] for a pixel-space backend or a
                latent model's latents (``sd-lora``: (N, 4, S/8, S/8),
                :func:`offchain.attribution.attributed_model.unet_inputs`).
            targets: float32 (M, C, S, S), the round's samples, likewise as ``unet``'s x_0.
            out_dir: the attributor's folder (created); it must hold the scores as
                ``out_dir / SCORES_FILE`` (float32 (M, N), ``.npy``) when this returns.
            seed: the round's attribution seed (≥ 0).
            progress: show progress bars.
            train_captions: N strings, the caption each training image was trained with
                ("" = the null caption), or None (all null). Used when the model is
                conditional (``model.encode_captions`` is not None); an unconditional model
                ignores them.
            target_captions: M strings, the prompts the targets were generated from, or None
                (all null); as ``train_captions``.

        Raises:
            DataError: bad shapes or values, or a caption list of the wrong length.
            StageError: unusable scores, or ``out_dir`` holds another request's results.
        """
        ...

    def holder_contributions(
        self, scores: np.ndarray, holder_index: np.ndarray, n_holders: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(raw, normalized)``, float64 (H,) each: a holder's aggregated score (any sign,
        0 without images) and its share (≥ 0, summing to 1).

        Args:
            scores: τ (M, N) from :meth:`scores`.
            holder_index: int (N,), each example's holder in [0, ``n_holders``).
            n_holders: H ≥ 1.
        """
        ...

    def record(self) -> dict[str, Any]:
        """The settings recorded in ``contributions.json`` (JSON values, in file order)."""
        ...


_REGISTRY: Registry[Attributor] = Registry("attributor")

register_attributor = _REGISTRY.register
"""``register_attributor(name, "<module>:<Class>")`` (a built-in, imported on first use) or
``@register_attributor(name)`` on a class; ConfigError when ``name`` is taken."""


attributor_names = _REGISTRY.names
"""``attributor_names()``: the registered attributor names, sorted."""
get_attributor = _REGISTRY.get
"""``get_attributor(name)``: the attributor class registered as ``name`` (its module imported on
first use); ConfigError naming the choices when there is none."""


register_attributor("trak", "offchain.attribution.trak_attributor:TrakAttributor")
