"""The model as attribution sees it: what its UNet denoises, and which parameters it trained.

Two things differ between a pixel-space model trained whole (``ddpm``, ``text-unet``) and a
latent model fine-tuned with LoRA (``sd-lora``), and both are settled here, once, for the round's
attribute stage and for LDS:

- **Inputs.** The UNet of a latent model denoises VAE latents, while the stages hold pixels
  (``backend.preprocess``, the samples): :func:`unet_inputs` maps them with the model's
  ``encode_images`` (:func:`offchain.diffusion.model_inputs`) and leaves a pixel model's images
  untouched.
- **Parameters.** TRAK (:mod:`offchain.attribution.trak`) differentiates every parameter its
  network yields from ``named_parameters()``. The paper's D-TRAK of a LoRA model is over the
  adapters only (the gradient dimension is the adapter size, not the frozen base's hundreds of
  millions of weights). :func:`differentiate_only` turns every other parameter into a buffer of
  the same name: the forward pass and ``state_dict`` are unchanged, ``torch.func``'s
  ``functional_call`` still finds each tensor by its dotted name, and ``named_parameters()``
  (so TRAK's gradient and its ``grad_dim``) holds the trainable ones alone.
  :func:`attributed_model` applies it with the backend's ``trainable_parameters`` (all of a
  ``ddpm`` or ``text-unet`` network: nothing changes for them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from offchain.diffusion.backend import DenoisingModel, ModelBackend, model_inputs
from offchain.errors import ConfigError

__all__ = ["attributed_model", "differentiate_only", "unet_inputs"]


def differentiate_only(network: nn.Module, names: Iterable[str]) -> nn.Module:
    """Keep ``names`` as ``network``'s parameters and make every other parameter a buffer.

    ``network`` is modified in place and returned: each parameter not in ``names`` is removed
    from its module's parameters and registered there as a persistent buffer of the same name
    holding the same (detached) tensor, so outputs, ``state_dict`` keys and values and device
    moves are as before. When ``names`` are all of the parameters nothing changes. A parameter
    shared by several modules (tied weights) stays a parameter wherever it is used when one of
    its names is kept.

    Args:
        network: the ε-network attribution will differentiate (e.g. ``DenoisingModel.unet``).
        names: dotted parameter names, as ``network.named_parameters()`` gives them (e.g. a
            backend's ``trainable_parameters``), at least one.

    Returns:
        ``network``, whose ``named_parameters()`` are exactly ``names`` (in module order).

    Raises:
        ConfigError: ``names`` is empty or names something that is not a parameter of
            ``network``.
    """
    keep = set(names)
    named = list(network.named_parameters(remove_duplicate=False))
    known = {name for name, _ in named}
    if not keep or not keep <= known:
        unknown = sorted(keep - known)[:3]
        raise ConfigError(
            "attribution needs at least one parameter of the network to differentiate; got "
            + (f"names that are not its parameters: {unknown}" if unknown else "none")
        )
    kept = {id(param) for name, param in named if name in keep}  # a tied copy stays too
    for module in network.modules():
        for param_name, param in list(module._parameters.items()):
            if param is None or id(param) in kept:
                continue
            del module._parameters[param_name]
            module.register_buffer(param_name, param.detach(), persistent=True)
    return network


def attributed_model(backend: ModelBackend, model: DenoisingModel) -> DenoisingModel:
    """``model`` whose ``unet`` has the backend's trainable parameters alone as parameters
    (:func:`differentiate_only` with ``backend.trainable_parameters(model)``; ``model.unet`` is
    modified in place): the LoRA adapters of ``sd-lora``, the whole network of ``ddpm`` and
    ``text-unet``.

    Raises:
        ConfigError: the backend names no parameter of the network.
    """
    names = [name for name, _ in backend.trainable_parameters(model)]
    return replace(model, unet=differentiate_only(model.unet, names))


def unet_inputs(
    model: DenoisingModel, images: Any, device: torch.device | str | None = None
) -> Any:
    """The x_0 ``model.unet`` denoises for pixel ``images`` float32 (B, C, S, S) in [−1, 1]
    (a tensor or an array).

    A pixel-space model (``encode_images`` None): ``images`` themselves, untouched. A latent
    model: ``model.encode_images`` of them (:func:`offchain.diffusion.model_inputs`; for
    ``sd-lora`` the VAE's scaled latents float32 (B, 4, S/8, S/8)), encoded on ``device``
    (None: the CPU) and returned as a float32 tensor on the CPU.
    """
    if model.encode_images is None:
        return images
    pixels = torch.as_tensor(images, dtype=torch.float32)
    return model_inputs(model, pixels.to(device or "cpu")).float().cpu()
