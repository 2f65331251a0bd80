"""Image encoders for the semantic (extrinsic-test) view, behind one :class:`Encoder` protocol.

- :class:`UNetFeatureEncoder` (``"unet"``): the default, weight-free: features of the round's
  own diffusion UNet at a small noise level. Nothing is downloaded. Its embedding space changes
  with every round's weights, so a calibration fitted on it is valid for that round only
  (:func:`offchain.copyright.calibration.fit_calibration` is cheap enough to run per round).
- :class:`TorchScriptEncoder` (``"torchscript:/path/model.pt"``): any TorchScript image encoder,
  e.g. SSCD (Pizzi et al., CVPR 2022), whose official release is a TorchScript file
  (``sscd_disc_mixup.torchscript.pt``), the copy detector of Somepalli et al. (CVPR 2023).
- :class:`HuggingFaceEncoder` (``"hf:/path/to/folder"``): CLIP or DINO(v2) image towers saved
  with ``save_pretrained``, loaded by ``transformers`` with ``local_files_only=True``
  (``transformers`` is optional and imported only here).

Pretrained weights are read from a local path only; :func:`load_encoder` builds any of them
from a spec string.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from offchain.errors import ConfigError, DataError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Encoder",
    "HuggingFaceEncoder",
    "TorchScriptEncoder",
    "UNetFeatureEncoder",
    "default_unet_layers",
    "encoder_name",
    "load_encoder",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet in [0, 1] (the normalisation SSCD, DINO and most CNNs expect)."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet in [0, 1]."""


def encoder_name(encoder: object) -> str:
    """The encoder's ``name`` attribute, else its class name (recorded in calibrations)."""
    name = getattr(encoder, "name", None)
    return str(name) if name else type(encoder).__name__


@runtime_checkable
class Encoder(Protocol):
    """Anything that maps images to embedding vectors (the extension point for SSCD/DINO/CLIP).

    ``encode(images)``: ``images`` float32 (B, C, S, S) in [-1, 1] → float32 (B, D). It must be
    deterministic (the same image always gives the same vector) so that an exact copy has
    cosine similarity 1 with its original.

    An optional ``name`` attribute (str) identifies the encoder in a calibration; a
    calibration is only valid for the encoder it was fitted with.
    """

    def encode(self, images: Tensor) -> Tensor: ...


class _StopForward(Exception):
    """Raised by the last forward hook: the layers after it are not needed."""


class UNetFeatureEncoder:
    """Weight-free embeddings from the round's own diffusion UNet.

    Each image x is noised to a small timestep t with ONE fixed noise field ε shared by all
    images, x_t = sqrt(ᾱ_t) x + sqrt(1 − ᾱ_t) ε, passed through the UNet, and the outputs of the
    named sub-modules (forward hooks) are average-pooled over space (to one value per channel,
    or per channel and cell of a ``pool_grid`` × ``pool_grid`` grid). Each layer's vector is
    L2-normalised and the layers are concatenated, so every layer weighs the same. The shared
    noise keeps the map deterministic: identical images give identical embeddings. The forward
    pass stops after the last hooked layer (the decoder half is not run).

    Measured on upscaled sklearn digits with a briefly trained UNet, after centering on the
    training mean (see :func:`semantic_similarity`): cosine ≈ 0.76 for 1-pixel-shifted noisy
    copies, ≈ 0.20 for other images of the same digit, ≈ −0.02 for other digits. Raw
    (uncentered) cosines are ≈ 0.99 for every pair — centering is what makes them useful.

    A text-conditioned network (the ``text-unet`` backend's ``unet(x_t, t, caption_ids=None)``,
    a module holding a diffusers UNet and a caption encoder) is run without caption ids, i.e.
    with the null caption: the embedding describes the image alone, whatever its caption, and
    the default layers are those of the diffusers UNet inside it (:func:`default_unet_layers`).
    RGB images are encoded as they are (the UNet takes C channels).

    A latent diffusion model (``sd-lora``: the UNet denoises VAE latents) passes its
    ``encode_images`` (:attr:`offchain.diffusion.DenoisingModel.encode_images`): each batch of
    pixel images is mapped to the UNet's x_0 first, then noised and passed through the UNet as
    above (the shared noise field has the latents' shape). Without it the images are x_0.

    Args:
        unet: a ``diffusers.UNet2DModel`` (ε-prediction) or a conditional wrapper of one, run in
            place (its device and dtype), in eval mode and without gradients; its training flag
            is restored afterwards.
        scheduler: its ``DDPMScheduler`` (``alphas_cumprod`` is read).
        timestep: t in [0, T), the noise level (default 20: ᾱ ≈ 0.998).
        layers: dotted names of sub-modules to read (default: the deepest down block and the
            mid block, :func:`default_unet_layers`). A module returning a tuple contributes its
            first element.
        seed: seed of the shared noise field.
        batch_size: images per forward pass.
        pool_grid: g ≥ 1; each layer is pooled to g × g cells (D = Σ channels · g²). 1 (global
            pooling) is largely class-level; 2 keeps the coarse layout.
        encode_images: pixels float32 (B, C, S, S) in [-1, 1] on the UNet's device → the x_0
            the UNet denoises, float32 (B, C', s, s) (a latent model's VAE encoder); None: the
            pixels are x_0. Deterministic (the VAE's posterior mean), so copies still match.

    Raises:
        ConfigError: unknown layer name, timestep out of range, bad ``batch_size`` or
            ``pool_grid``.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler: object,
        timestep: int = 20,
        layers: Sequence[str] | None = None,
        seed: int = 0,
        batch_size: int = 256,
        pool_grid: int = 1,
        encode_images: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.unet = unet
        self.encode_images = encode_images
        acp = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float32).reshape(-1)
        if not 0 <= timestep < acp.numel():
            raise ConfigError(f"timestep must be in [0, {acp.numel()}), got {timestep}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
        if pool_grid < 1:
            raise ConfigError(f"pool_grid must be ≥ 1, got {pool_grid}")
        self.pool_grid = int(pool_grid)
        self.timestep = int(timestep)
        self.alpha_bar = float(acp[self.timestep])
        modules = dict(unet.named_modules())
        if layers is None:
            layers = default_unet_layers(unet)
        missing = [name for name in layers if name not in modules]
        if missing or not layers:
            raise ConfigError(f"unknown UNet layers {missing or layers}")
        self.layers = tuple(layers)
        self._modules = [modules[name] for name in self.layers]
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        grid = f",grid={self.pool_grid}" if self.pool_grid > 1 else ""
        latent = ",x0=encoded" if encode_images is not None else ""
        self.name = f"unet(t={self.timestep},layers={'+'.join(self.layers)}{grid}{latent})"
        """Recorded in calibrations; names the recipe, not the weights (see the module doc)."""

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Embeddings float32 (B, D), D = Σ channels of the hooked layers, of pixel ``images``
        float32 (B, C, S, S) in [-1, 1]."""
        param = next(self.unet.parameters())
        device, dtype = param.device, param.dtype
        noise: Tensor | None = None  # the shared field, drawn once x_0's shape is known
        a = self.alpha_bar
        captured: dict[int, Tensor] = {}

        n_layers = len(self._modules)
        grid = self.pool_grid

        def hook(i: int):
            def _hook(_module: torch.nn.Module, _inputs: object, output: object) -> None:
                out = output[0] if isinstance(output, tuple) else output
                # Average pool over space: (B, C_i) or (B, C_i · g²).
                captured[i] = F.adaptive_avg_pool2d(out.float(), grid).flatten(1)
                if len(captured) == n_layers:
                    raise _StopForward

            return _hook

        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self._modules)]
        was_training = self.unet.training
        self.unet.eval()
        chunks = []
        try:
            for start in range(0, images.shape[0], self.batch_size):
                x = images[start : start + self.batch_size].to(device, dtype)
                if self.encode_images is not None:  # pixels → the UNet's x_0 (latents)
                    x = self.encode_images(x).to(device, dtype)
                if noise is None:
                    gen = torch.Generator().manual_seed(self.seed)
                    noise = torch.randn((1, *x.shape[1:]), generator=gen).to(device, dtype)
                x_t = a**0.5 * x + (1.0 - a) ** 0.5 * noise  # forward diffusion to t
                t = torch.full((x.shape[0],), self.timestep, dtype=torch.int64, device=device)
                captured.clear()
                try:
                    self.unet(x_t, t)
                except _StopForward:
                    pass
                if len(captured) != n_layers:
                    raise DataError(f"UNet layers {self.layers} did not all run")
                chunks.append(
                    torch.cat([F.normalize(captured[i], dim=1) for i in range(n_layers)], 1).cpu()
                )
        finally:
            for h in handles:
                h.remove()
            self.unet.train(was_training)
        return torch.cat(chunks, 0)


def default_unet_layers(unet: torch.nn.Module) -> tuple[str, ...]:
    """The default layers of :class:`UNetFeatureEncoder`: the deepest down block and the mid
    block of the first sub-module (``unet`` itself first) that has ``down_blocks`` and
    ``mid_block`` — a diffusers UNet, bare or inside a conditional wrapper (its dotted names
    then carry the wrapper's prefix, e.g. ``unet.mid_block``).

    Raises:
        ConfigError: no such sub-module.
    """
    for name, module in unet.named_modules():
        if hasattr(module, "down_blocks") and hasattr(module, "mid_block"):
            prefix = f"{name}." if name else ""
            n_down = len(module.down_blocks)
            down = [f"{prefix}down_blocks.{n_down - 1}"] if n_down else []
            return (*down, f"{prefix}mid_block")
    raise ConfigError(
        f"{type(unet).__name__} holds no diffusers UNet (a module with down_blocks and "
        "mid_block); pass the encoder's layers explicitly"
    )


def _check_images(images: Tensor) -> Tensor:
    if images.ndim != 4 or images.shape[0] < 1:
        raise DataError(f"images must be (B ≥ 1, C, S, S), got {tuple(images.shape)}")
    return images.detach().to("cpu", torch.float32)


def _to_model_input(
    images: Tensor,
    input_size: int | tuple[int, int] | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    channels: int,
) -> Tensor:
    """[-1, 1] (B, C, S, S) → [0, 1], grayscale repeated to ``channels``, resized (bilinear),
    then ``(x − mean) / std`` per channel when ``mean`` is given."""
    x = (images + 1.0) / 2.0
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        else:
            raise DataError(f"encoder expects {channels} channels, got {x.shape[1]}")
    if input_size is not None:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if tuple(x.shape[2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    if mean is not None:
        m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x - m) / s
    return x.contiguous()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def _first_tensor(output: object) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, dict):
        for value in output.values():
            if isinstance(value, Tensor):
                return value
    raise DataError(f"encoder returned {type(output).__name__}, not a tensor")


class TorchScriptEncoder:
    """Embeddings from a TorchScript image encoder, e.g. SSCD (the copy detector used by
    Somepalli et al., CVPR 2023; Pizzi et al., CVPR 2022).

    Images float32 (B, C, S, S) in [-1, 1] are mapped to [0, 1], grayscale is repeated to
    ``channels`` channels, resized to ``input_size`` (bilinear; SSCD was trained at 224–320
    pixels) and normalised with the ImageNet mean/std (``normalize="imagenet"``, what SSCD
    expects) or left in [0, 1] (``"none"``). The module is run on CPU in eval mode without
    gradients; its output (a tensor, or the first tensor of a tuple/dict) is flattened to
    float32 (B, D).

    Args:
        path: the ``.pt`` TorchScript file (``torch.jit.save``).
        input_size: side the images are resized to, or None to keep S.
        normalize: ``"imagenet"`` or ``"none"``.
        channels: input channels the module expects (3 for SSCD).
        batch_size: images per forward pass.

    Raises:
        ConfigError: missing file, not loadable by ``torch.jit.load``, or a bad option.
    """

    def __init__(
        self,
        path: str | Path,
        input_size: int | None = 224,
        normalize: str = "imagenet",
        channels: int = 3,
        batch_size: int = 64,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"TorchScript encoder file {path} does not exist")
        if normalize not in ("imagenet", "none"):
            raise ConfigError(f"normalize must be 'imagenet' or 'none', got {normalize!r}")
        if input_size is not None and input_size < 1:
            raise ConfigError(f"input_size must be ≥ 1 or None, got {input_size}")
        if channels < 1 or batch_size < 1:
            raise ConfigError("channels and batch_size must be ≥ 1")
        try:
            self.module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot load TorchScript encoder {path}: {exc}") from exc
        self.module.eval()
        self.input_size = input_size
        self.normalize = normalize
        self.channels = int(channels)
        self.batch_size = int(batch_size)
        self.name = f"torchscript:{path.name}@{_file_digest(path)}"
        """``torchscript:<file name>@<first 12 hex of its SHA-256>``: names the weights."""

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Embeddings float32 (B, D)."""
        images = _check_images(images)
        mean = IMAGENET_MEAN if self.normalize == "imagenet" else None
        std = IMAGENET_STD if self.normalize == "imagenet" else None
        if mean is not None and self.channels != 3:
            mean, std = mean[:1] * self.channels, std[:1] * self.channels
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            x = _to_model_input(
                images[start : start + self.batch_size], self.input_size, mean, std, self.channels
            )
            out.append(_first_tensor(self.module(x)).float().flatten(1))
        return torch.cat(out, 0)


class HuggingFaceEncoder:
    """Embeddings from a CLIP or DINO(v2)/ViT image model saved with ``save_pretrained``.

    Loaded by ``transformers`` (optional dependency, imported lazily) with
    ``local_files_only=True``: nothing is downloaded. The folder must hold the model and its
    image-processor config; the processor's mean/std and crop (or resize) size are applied to
    the [-1, 1] images after mapping them to [0, 1] and repeating grayscale to RGB. CLIP models
    (``model_type == "clip"``) give ``get_image_features`` (the projected image embedding);
    other models give ``pooler_output`` when present, else the first ([CLS]) token of
    ``last_hidden_state``.

    Args:
        path: the local model folder.
        batch_size: images per forward pass.

    Raises:
        ConfigError: the folder is missing, ``transformers`` is not installed
            (``pip install transformers``), or the model/processor cannot be loaded.
    """

    def __init__(self, path: str | Path, batch_size: int = 32) -> None:
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"Hugging Face encoder folder {path} does not exist")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
        try:
            import transformers
        except ImportError as exc:
            raise ConfigError(
                "the 'hf:' encoder needs the optional package transformers: "
                "pip install transformers"
            ) from exc
        try:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
            processor = transformers.AutoImageProcessor.from_pretrained(path, local_files_only=True)
            if getattr(config, "model_type", "") == "clip":
                model = transformers.CLIPModel.from_pretrained(path, local_files_only=True)
                self._forward: Callable[[Tensor], Tensor] = lambda x: model.get_image_features(
                    pixel_values=x
                )
            else:
                model = transformers.AutoModel.from_pretrained(path, local_files_only=True)

                def _forward(x: Tensor) -> Tensor:
                    out = model(pixel_values=x)
                    pooled = getattr(out, "pooler_output", None)
                    return pooled if pooled is not None else out.last_hidden_state[:, 0]

                self._forward = _forward
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"cannot load Hugging Face encoder from {path}: {exc}") from exc
        model.eval()
        self.model = model
        self.mean = tuple(getattr(processor, "image_mean", None) or IMAGENET_MEAN)
        self.std = tuple(getattr(processor, "image_std", None) or IMAGENET_STD)
        self.input_size = _processor_size(processor)
        self.batch_size = int(batch_size)
        self.name = f"hf:{path.name}:{getattr(config, 'model_type', 'unknown')}"

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Embeddings float32 (B, D)."""
        images = _check_images(images)
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            x = _to_model_input(
                images[start : start + self.batch_size], self.input_size, self.mean, self.std, 3
            )
            out.append(self._forward(x).float().flatten(1))
        return torch.cat(out, 0)


def _processor_size(processor: object) -> tuple[int, int]:
    """(height, width) the model was trained at, from ``crop_size`` or ``size``; 224 default."""
    for attr in ("crop_size", "size"):
        size = getattr(processor, attr, None)
        if isinstance(size, int):
            return (size, size)
        if isinstance(size, dict):
            if "height" in size and "width" in size:
                return (int(size["height"]), int(size["width"]))
            if "shortest_edge" in size:
                return (int(size["shortest_edge"]),) * 2
    return (224, 224)


def load_encoder(
    spec: str,
    unet: torch.nn.Module | None = None,
    scheduler: object | None = None,
    *,
    timestep: int = 20,
    seed: int = 0,
    batch_size: int = 256,
    input_size: int | None = 224,
    normalize: str = "imagenet",
    encode_images: Callable[[Tensor], Tensor] | None = None,
) -> Encoder:
    """Build the encoder named by ``spec``.

    Specs:
        ``"unet"``: :class:`UNetFeatureEncoder` of ``unet``/``scheduler`` at ``timestep`` with
        the shared-noise ``seed``, mapping pixels to x_0 with ``encode_images`` first when
        given (a latent model's ``DenoisingModel.encode_images``; the other encoders read
        pixels and ignore it); ``"torchscript:<path>"``: :class:`TorchScriptEncoder`
        (``input_size``, ``normalize``); ``"hf:<path>"``: :class:`HuggingFaceEncoder`.

    Raises:
        ConfigError: unknown spec, empty or missing path, ``"unet"`` without a UNet and
            scheduler, ``transformers`` missing for ``"hf:"``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"encoder spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec == "unet":
        if unet is None or scheduler is None:
            raise ConfigError("encoder 'unet' needs the round's UNet and scheduler")
        return UNetFeatureEncoder(
            unet, scheduler, timestep=timestep, seed=seed, batch_size=batch_size,
            encode_images=encode_images,
        )
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("torchscript", "hf"):
        if not rest:
            raise ConfigError(f"encoder spec {spec!r} names no path")
        path = Path(rest).expanduser()
        if not path.exists():
            raise ConfigError(f"encoder spec {spec!r}: path {path} does not exist")
        if kind == "torchscript":
            return TorchScriptEncoder(
                path, input_size=input_size, normalize=normalize, batch_size=min(batch_size, 64)
            )
        return HuggingFaceEncoder(path, batch_size=min(batch_size, 32))
    raise ConfigError(
        f"unknown encoder spec {spec!r}; use 'unet', 'torchscript:<path>' or 'hf:<path>'"
    )
