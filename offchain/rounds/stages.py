"""The off-chain stages of one round, each a function from paths to paths.

Their order, keys and artifacts are defined once, in :data:`offchain.rounds.pipeline.PIPELINE`
(which also lists the oracle's chain stages: signing, submission, finality, claims, in
:mod:`offchain.oracle`). Every stage reads its inputs from the round directory
(:class:`~offchain.layout.RoundPaths`), writes its outputs atomically, and returns at once
when its outputs already exist, so a re-run after a crash redoes only unfinished work. None of
them touches the chain.

The ML stages reach the model and the attribution method only through their protocols, picked
by name from ``cfg.backend`` (:func:`offchain.diffusion.get_backend`) and ``cfg.attributor``
(:func:`offchain.attribution.get_attributor`). Those registries import an implementation's
module (and with it torch) on first use, so importing this module stays torch-free; the
copyright and quality packages, which import torch at once, are imported inside their stages.
Every stage that loads the model moves it to ``select_device(cfg.device)``
(:mod:`offchain.diffusion.device`); training and sampling pick the device inside the backend.

Captions. ``prepare`` writes each training image's caption (``train_captions.json``, "" where
its holder has none). A conditional backend (``backend.conditional``, e.g. ``text-unet``) trains
on them; ``generate`` then samples the round's M generations from a fixed prompt set, drawn
once per round (:func:`draw_prompts`: M captions of the round's training images, seeded by the
round) and recorded in ``prompts.json``; attribution differentiates the caption-conditioned
output of both; the copyright stage regenerates works from their own captions. An
unconditional backend (``ddpm``) trains and samples without captions, exactly as before.

Latent models. The stages hold pixels: ``backend.preprocess`` of the training images, the
samples, the copyright probes. A latent model's UNet (``sd-lora``: Stable Diffusion with LoRA)
denoises VAE latents instead, so attribution feeds it ``model.encode_images`` of the pixels and
differentiates its trainable parameters only, the LoRA adapters
(:mod:`offchain.attribution.attributed_model`), and the default ``unet`` copyright encoder
encodes pixels to latents first; the copyright loss's pixel views (SSIM, tiled ℓ2) stay on
pixels. ``sd-lora`` caches each image's latents in the run's ``cache/sd-latents/``
(``cfg.cache_dir``), so a later round encodes only the works it has not seen.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from offchain import faults
from offchain.allocation import (
    PayoutCaps,
    PayoutTree,
    capped_split,
    largest_remainder,
    parse_wei,
    wei_str,
    wei_str_or_none,
)
from offchain.attribution import SCORES_FILE, Attributor, get_attributor
from offchain.data.holders import Holder, training_captions, training_set
from offchain.diffusion import DenoisingModel, ModelBackend, get_backend
from offchain.errors import ConfigError, StageError
from offchain.layout import RoundPaths
from offchain.policy import (
    BudgetPolicy,
    CampaignState,
    HolderFeatures,
    PolicyDecision,
    apply_caps,
)
from offchain.rounds.config import MLConfig
from offchain.utils import atomic_write, read_json, sha256_file, write_json, write_npy

__all__ = [
    "UNET_INPUTS_FILE",
    "allocate",
    "assess_copyright",
    "assess_quality",
    "attribute",
    "decide",
    "draw_prompts",
    "featurize",
    "generate",
    "prepare",
    "prepare_quality_reference",
    "train",
]

logger = logging.getLogger(__name__)


def _backend(cfg: MLConfig) -> ModelBackend:
    """The round's model backend, ``cfg.backend`` built from ``cfg``."""
    return get_backend(cfg.backend).from_settings(cfg)


def _attributor(cfg: MLConfig) -> Attributor:
    """The round's attributor, ``cfg.attributor`` built from ``cfg``."""
    return get_attributor(cfg.attributor).from_settings(cfg)


def _train_seed(paths: RoundPaths, cfg: MLConfig) -> int:
    """Seed of a round's training and attribution: distinct per round, fixed by the run's seed."""
    return cfg.seed + paths.round_id


def _sample_seed(paths: RoundPaths, cfg: MLConfig) -> int:
    """Seed of a round's sampling: distinct per round, fixed by the run's seed."""
    return cfg.seed + 7919 * paths.round_id


def _require(path, stage: str) -> None:
    if not path.exists():
        raise StageError(f"{stage}: missing input artifact {path}")


def _device(cfg: MLConfig):  # -> torch.device (torch imported lazily)
    """The torch device of ``cfg.device`` (:func:`offchain.diffusion.device.select_device`).

    Raises:
        ConfigError: CUDA asked for where there is none.
    """
    from offchain.diffusion.device import select_device

    return select_device(cfg.device)


def _train_captions(paths: RoundPaths) -> list[str]:
    """The round's training captions (N strings, "" = none); all "" for a round prepared
    before captions were recorded (no ``train_captions.json``)."""
    if paths.train_captions.exists():
        return [str(c) for c in read_json(paths.train_captions)]
    return [""] * int(read_json(paths.manifest)["n_train"])


def draw_prompts(captions: Sequence[str], n: int, seed: int) -> list[str]:
    """The fixed prompt set of a round's generations: ``n`` captions drawn from the round's
    training captions.

    Only non-empty captions are drawn (each training image's caption once, so a caption
    shared by several images is more likely), without replacement when there are at least
    ``n`` of them, else with replacement; with no caption at all every prompt is "" (the null
    caption: unconditional samples). The draw depends only on ``captions``, ``n`` and
    ``seed`` (``numpy.random.default_rng(seed)``).

    Args:
        captions: the round's training captions (N strings, "" = none).
        n: prompts M ≥ 1.
        seed: the round's sampling seed.

    Returns:
        ``n`` strings.
    """
    pool = [c for c in captions if c]
    if not pool:
        return [""] * n
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(pool), size=n, replace=len(pool) < n)
    return [pool[int(i)] for i in picked]


def prepare(
    paths: RoundPaths, holders: Sequence[Holder], participating: Sequence[bool] | np.ndarray
) -> RoundPaths:
    """Write the round's manifest and its training set from the participating holders.

    Outputs: ``manifest.json`` (holders with address, price, image hashes and a root per holder,
    licence and attribution where set, the dataset root, participants), ``train_images.npy``
    uint8 (N, H, W) or (N, H, W, 3), ``train_captions.json`` (N strings, "" where the holder
    has no captions) and ``holder_index.npy`` int64 (N,).

    Raises:
        StageError: no holder participates, or the mask's length differs from the holders'.
    """
    if paths.manifest.exists():
        return paths
    participating = np.asarray(participating, dtype=bool)
    if participating.shape != (len(holders),):
        raise StageError(
            f"participation mask has {participating.shape}, expected ({len(holders)},)"
        )
    if not participating.any():
        raise StageError(f"round {paths.round_id}: no holder participates")
    shapes = {h.images.shape[1:] for h in holders}
    if len(shapes) != 1:
        raise StageError(f"holders' images differ in size: {sorted(shapes)}")
    images, holder_index = training_set(holders, participating)
    captions = training_captions(holders, participating)
    entries = []
    for i, holder in enumerate(holders):
        hashes = list(holder.image_hashes)
        entry = {
            "index": i,
            "name": holder.name,
            "address": holder.address,
            "reservation_price_wei": wei_str(int(holder.reservation_price_wei)),
            "n_images": holder.n_images,
            "images_root": _hash_list(hashes),
            "image_hashes": hashes,
            "participating": bool(participating[i]),
        }
        for key in ("licence", "attribution"):  # only where set: MNIST manifests unchanged
            if getattr(holder, key) is not None:
                entry[key] = getattr(holder, key)
        entries.append(entry)
    previous = paths.previous()
    manifest = {
        "round_id": paths.round_id,
        "n_holders": len(holders),
        "n_train": int(len(images)),
        "dataset_root": _hash_list([e["images_root"] for e in entries if e["participating"]]),
        "previous_checkpoint": str(previous.checkpoint) if previous else None,
        "holders": entries,
    }
    write_npy(paths.train_images, images)
    write_npy(paths.holder_index, holder_index)
    write_json(paths.train_captions, list(captions))
    write_json(paths.manifest, manifest)  # last: its presence marks the stage done
    return paths


def train(paths: RoundPaths, cfg: MLConfig) -> RoundPaths:
    """Train the round's model on ``train_images.npy``, continuing from the last round's.

    Output: ``checkpoint/`` (the backend's checkpoint folder; for ``ddpm`` the diffusers
    ``save_pretrained`` of the UNet and scheduler), trained with seed ``cfg.seed + round_id``
    on ``cfg.device``. A conditional backend trains on ``train_captions.json`` (an image with
    "" trains the null caption); an unconditional one trains on the images alone.

    With ``cfg.num_processes`` N > 1 a data-parallel backend (one whose class sets
    ``data_parallel = True``) trains in N processes (:func:`offchain.rounds.distributed.
    launch_stage`, each process running this stage with N = 1 under ``accelerate launch``);
    any other backend trains in this process.

    Raises:
        StageError: an input is missing, or a launched process died.
    """
    _require(paths.manifest, "train")
    previous = paths.previous()
    init = previous.checkpoint if previous is not None else None
    if init is not None:
        _require(init, "train (previous round's checkpoint)")
    backend = _backend(cfg)
    if cfg.num_processes > 1 and getattr(backend, "data_parallel", False):
        if not backend.is_complete(paths.checkpoint):
            from offchain.rounds.distributed import launch_stage

            # each process runs this stage with N = 1, armed like this one (the kill -9 suite)
            launch_stage("train", paths, cfg, fault_point=faults.armed())
        return paths
    images = np.load(paths.train_images)
    backend.train_round(
        images,
        paths.checkpoint,
        seed=_train_seed(paths, cfg),
        init_checkpoint=init,
        progress=cfg.progress,
        captions=_train_captions(paths) if backend.conditional else None,
    )
    return paths


def generate(paths: RoundPaths, cfg: MLConfig) -> RoundPaths:
    """Sample ``cfg.n_samples`` images from the round's model into ``samples.npy``.

    Output: float32 (M, C, S, S) in [-1, 1], seeded by the round. A conditional backend samples
    sample m from prompt m of the round's fixed prompt set (:func:`draw_prompts` over
    ``train_captions.json``, seeded like the sampling), with classifier-free guidance
    ``cfg.guidance_scale``; the prompts are written first, to ``prompts.json``, and reused if
    the stage is run again. ``generations.png`` (:func:`offchain.rounds.figures.
    generations_figure`: generations with their prompts next to holders' works) is written
    before ``samples.npy``.
    """
    if paths.samples.exists():
        return paths
    _require(paths.checkpoint, "generate")
    backend = _backend(cfg)
    seed = _sample_seed(paths, cfg)
    prompts = None
    if not backend.conditional:
        samples = backend.sample(paths.checkpoint, cfg.n_samples, seed=seed)
    else:
        if not paths.prompts.exists():
            write_json(paths.prompts, draw_prompts(_train_captions(paths), cfg.n_samples, seed))
        prompts = _prompts(paths)
        samples = backend.sample(paths.checkpoint, cfg.n_samples, seed=seed, captions=prompts,
                                 guidance_scale=cfg.guidance_scale)
    samples = np.asarray(samples, dtype=np.float32)
    _generations_figure(paths, samples, prompts)
    write_npy(paths.samples, samples)
    return paths


def _generations_figure(paths: RoundPaths, samples: np.ndarray, prompts: list[str] | None
                        ) -> None:
    """Write ``generations.png`` of the round (see :func:`offchain.rounds.figures.
    generations_figure`)."""
    from offchain.rounds.figures import generations_figure  # matplotlib: only when drawing

    manifest = read_json(paths.manifest)
    n_train = int(manifest["n_train"])
    generations_figure(
        paths.generations_png,
        samples,
        prompts,
        np.load(paths.train_images),
        np.load(paths.holder_index),
        _train_captions(paths)[:n_train],
        [h["name"] for h in manifest["holders"]],
        title=f"Round {paths.round_id}: generations next to the works they were trained on",
    )


def _prompts(paths: RoundPaths) -> list[str] | None:
    """The round's recorded prompts (``prompts.json``), or None (an unconditional round)."""
    return [str(p) for p in read_json(paths.prompts)] if paths.prompts.exists() else None


class _RoundInputs(NamedTuple):
    """What the attribute and copyright stages read of a trained and sampled round."""

    backend: ModelBackend
    model: DenoisingModel
    """The round's checkpoint, its ``unet`` on ``cfg.device``."""
    train_images: Any
    """float32 (N, C, S, S) in [−1, 1]: the training images as ``backend.preprocess`` returns
    them (pixels, for every backend)."""
    samples: np.ndarray
    """float32 (M, C, S, S) in [−1, 1]: the round's generations (pixels)."""
    holder_index: np.ndarray
    """int64 (N,): the holder of each training image."""
    n_holders: int


def _round_inputs(paths: RoundPaths, cfg: MLConfig, stage: str, on_device: bool = True
                  ) -> _RoundInputs:
    """The backend, the checkpoint loaded with its ``unet`` on ``cfg.device`` (on the CPU when
    not ``on_device``), the training images and samples as pixels, the holder index and the
    number of holders of a trained and sampled round.

    Raises:
        StageError: the manifest, checkpoint or samples are missing.
    """
    for p in (paths.manifest, paths.checkpoint, paths.samples):
        _require(p, stage)
    backend = _backend(cfg)
    model = backend.load(paths.checkpoint)
    if on_device:
        model.unet.to(_device(cfg))  # nn.Module.to moves the module in place
    return _RoundInputs(
        backend=backend,
        model=model,
        train_images=backend.preprocess(np.load(paths.train_images)),
        samples=np.load(paths.samples),
        holder_index=np.load(paths.holder_index),
        n_holders=int(read_json(paths.manifest)["n_holders"]),
    )


UNET_INPUTS_FILE = "unet_inputs.npz"
"""A latent model's attribution inputs in ``trak/``: ``train`` float32 (N, C', s, s) and
``targets`` float32 (M, C', s, s), the x_0 its UNet denoises, encoded once per round."""


class _AttributionRequest(NamedTuple):
    """What the attributor is asked for a round (the same in every process of a launch)."""

    model: DenoisingModel
    """The checkpoint, differentiated over the backend's trainable parameters only."""
    train: Any
    """x_0 of the training images, (N, C', s, s)."""
    targets: Any
    """x_0 of the samples, (M, C', s, s)."""
    kwargs: dict[str, Any]
    """``seed``, ``progress``, ``train_captions``, ``target_captions``."""


def _attribution_request(paths: RoundPaths, cfg: MLConfig, inputs: _RoundInputs
                         ) -> _AttributionRequest:
    """The model as attribution sees it (:mod:`offchain.attribution.attributed_model`), the
    x_0 of the training images and samples, and the attributor's keyword arguments.

    A pixel model's x_0 are the pixels. A latent model's are encoded on ``cfg.device`` once and
    kept in ``trak/unet_inputs.npz`` (:data:`UNET_INPUTS_FILE`): a rerun, the processes of a
    launched featurization and the scoring afterwards all read the same latents (encodings on
    different devices need not agree to the bit, and the feature stores' identity hashes
    them)."""
    from offchain.attribution.attributed_model import attributed_model, unet_inputs

    model = attributed_model(inputs.backend, inputs.model)
    train, targets = inputs.train_images, inputs.samples
    if model.encode_images is not None:
        saved = paths.trak_dir / UNET_INPUTS_FILE
        if not saved.exists():
            device = _device(cfg)
            encoded = {"train": unet_inputs(model, train, device).numpy(),
                       "targets": unet_inputs(model, targets, device).numpy()}
            saved.parent.mkdir(parents=True, exist_ok=True)

            def _write(tmp: Path) -> None:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **encoded)

            atomic_write(saved, _write)
        with np.load(saved) as x0:
            train, targets = x0["train"], x0["targets"]
    conditional = model.encode_captions is not None
    kwargs = {
        "seed": _train_seed(paths, cfg),
        "progress": cfg.progress,
        "train_captions": _train_captions(paths) if conditional else None,
        "target_captions": _prompts(paths) if conditional else None,
    }
    return _AttributionRequest(model, train, targets, kwargs)


def featurize(paths: RoundPaths, cfg: MLConfig) -> RoundPaths:
    """Fill the attributor's feature stores of the round's attribute stage, the work shared by
    the processes of an ``accelerate launch`` (the worker stage ``featurize`` of
    :mod:`offchain.rounds.distributed`; in one process: all of it). The attribute stage then
    only finalises and scores. Inputs and model as :func:`attribute`'s, which writes a latent
    model's ``trak/unet_inputs.npz`` before it launches this stage (run on its own, in one
    process, this stage writes it).

    Raises:
        StageError: an input is missing.
        ConfigError: the attributor cannot featurize apart from scoring (no ``featurize``).
    """
    if paths.contributions.exists():
        return paths
    attributor = _attributor(cfg)
    if not hasattr(attributor, "featurize"):
        raise ConfigError(f"the {attributor.name} attributor has no featurize step to share "
                          "among processes; run the attribute stage with num_processes 1")
    inputs = _round_inputs(paths, cfg, "featurize", on_device=False)
    request = _attribution_request(paths, cfg, inputs)
    attributor.featurize(request.model, request.train, request.targets, paths.trak_dir,
                         **request.kwargs)
    return paths


def attribute(paths: RoundPaths, cfg: MLConfig) -> RoundPaths:
    """The attributor's scores of the round's samples against every training image, and each
    holder's contribution (``cfg.attributor``; TRAK by default, with ``cfg.trak_ensemble`` = E > 1
    the mean over E projection and noise seeds).

    Outputs: ``trak/scores.npy`` float32 (M, N) and ``contributions.json`` with the
    attributor's settings, ``raw`` (for TRAK: Σ τ over the holder's images, mean over targets)
    and ``normalized`` (positive part, summing to 1) per holder (0 for holders that did not
    train this round). For a conditional model the output is conditioned on each training
    image's caption and each target's prompt (``prompts.json``).

    The attributor sees what the model's ``unet`` denoises: the training images and the
    samples as pixels for a pixel-space backend, their VAE latents for ``sd-lora`` (encoded
    once, ``trak/unet_inputs.npz``); and it differentiates the backend's trainable parameters
    only (``backend.trainable_parameters``: the LoRA adapters of ``sd-lora``, the whole
    network otherwise; :mod:`offchain.attribution.attributed_model`).

    With ``cfg.num_processes`` N > 1 and an attributor that can featurize apart (TRAK), the
    featurization runs first in N processes (:func:`featurize` under
    :func:`offchain.rounds.distributed.launch_stage`); the scores are the same as in one
    process.

    Raises:
        StageError: an input is missing, the attributor left no ``trak/scores.npy``, or a
            launched process died.
        ConfigError: the backend names no trainable parameter of its network.
    """
    if paths.contributions.exists():
        return paths
    attributor = _attributor(cfg)
    launch = cfg.num_processes > 1 and hasattr(attributor, "featurize")
    # under a launch the GPUs are the workers': this process keeps its model on the CPU
    inputs = _round_inputs(paths, cfg, "attribute", on_device=not launch)
    request = _attribution_request(paths, cfg, inputs)  # a latent model's x_0 saved first
    if launch:
        from offchain.rounds.distributed import launch_stage

        launch_stage("featurize", paths, cfg, fault_point=faults.armed())
    scores = attributor.scores(request.model, request.train, request.targets, paths.trak_dir,
                               **request.kwargs)
    _require(paths.trak_dir / SCORES_FILE, f"attribute ({attributor.name}'s scores)")
    raw, normalized = attributor.holder_contributions(
        scores, inputs.holder_index, inputs.n_holders
    )
    write_json(
        paths.contributions,
        {
            "round_id": paths.round_id,
            **attributor.record(),
            "scores_shape": list(np.shape(scores)),
            "raw": [float(x) for x in raw],
            "normalized": [float(x) for x in normalized],
        },
    )
    return paths


def assess_copyright(paths: RoundPaths, cfg: MLConfig) -> RoundPaths:
    """Each holder's copyright loss this round, from a calibrated probability of substantial
    similarity (docs/copyright.md).

    The calibration is fitted on this round's encoder and works (augmented copies versus
    unrelated works) and saved as ``copyright_calibration.json``. What is compared depends on
    the backend:

    - unconditional (``ddpm``): the round's M generations (``samples.npy``) against every work
      (:func:`offchain.copyright.compute_copyright_losses`); ``loss`` = share of generations
      that substantially copy one of the holder's works;
    - conditional (``text-unet``, ``sd-lora``): the paper's procedure. Up to
      ``cfg.copyright_probes`` works per participating holder are drawn
      (:func:`offchain.copyright.probes.choose_probe_works`, seeded by the round), the model
      generates from each one's caption (with guidance), and every generation is compared
      with every work (:func:`offchain.copyright.probes.compute_caption_copyright`): a
      generation copying a work charges that work's holder, whoever's caption asked for it;
      ``loss`` = the holder's expected copies over all P probes (the share of the round's
      prompts whose generation copies one of its works, as the unconditional procedure). The
      probes are written first, to ``copyright_probes.npz`` (``samples`` float32 (P, C, S, S),
      ``work_index`` int64 (P,) into the training set, ``holder`` int64 (P,)), and reused if
      the stage is run again.

    Works and generations are compared as pixels (SSIM, tiled ℓ2, and the encoder's input);
    the default ``unet`` encoder of a latent model (``sd-lora``) encodes them to the latents
    its UNet denoises first (``model.encode_images``).

    Output ``copyright.json``: per holder ``loss`` in [0, 1] (0 for holders that did not
    train this round), ``expected_copies``, ``weighted``, ``n_replications``, ``n_copies`` and
    the raw ``semantic`` / ``perceptual`` / ``tiled_l2`` statistics
    (:meth:`offchain.copyright.CopyrightResult.summary`; the probe procedure adds its own keys).

    Raises:
        ConfigError: an unknown or missing encoder (``cfg.copyright_encoder``).
        DataError: too few distinct works to calibrate on (fewer than 8).
    """
    # offchain.copyright imports torch at once: imported here to keep it out of start-up.
    from offchain.copyright import CopyrightConfig, compute_copyright_losses, load_encoder

    if paths.copyright.exists():
        return paths
    inputs = _round_inputs(paths, cfg, "copyright")
    model, backend = inputs.model, inputs.backend
    train_images, holder_index, n_holders = (
        inputs.train_images, inputs.holder_index, inputs.n_holders)
    copyright_cfg = CopyrightConfig()
    encoder = load_encoder(
        cfg.copyright_encoder, model.unet, model.scheduler,
        timestep=copyright_cfg.semantic_timestep, encode_images=model.encode_images,
    )
    if backend.conditional:
        from offchain.copyright.probes import compute_caption_copyright

        work_index, probes = _copyright_probes(paths, cfg, backend, holder_index, n_holders)
        result = compute_caption_copyright(
            encoder, train_images, holder_index, n_holders, work_index, probes, copyright_cfg
        )
    else:
        result = compute_copyright_losses(
            model.unet, model.scheduler, inputs.samples, train_images, holder_index, n_holders,
            copyright_cfg, encoder,
        )
    result.calibration.save(paths.copyright_calibration)
    summary = result.summary()
    participating = [h["participating"] for h in read_json(paths.manifest)["holders"]]
    summary["loss"] = [x if p else 0.0 for x, p in zip(summary["loss"], participating, strict=True)]
    write_json(paths.copyright, {"round_id": paths.round_id, **summary})
    return paths


def _copyright_probes(
    paths: RoundPaths, cfg: MLConfig, backend: ModelBackend, holder_index: np.ndarray,
    n_holders: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(work_index int64 (P,), generations float32 (P, C, S, S))``: the round's copyright
    probes, read from ``copyright_probes.npz`` or drawn, generated and written there."""
    from offchain.copyright.probes import choose_probe_works

    if paths.copyright_probes.exists():
        with np.load(paths.copyright_probes) as saved:
            return saved["work_index"], saved["samples"]
    seed = _sample_seed(paths, cfg) + 2  # other draws than samples.npy and the quality's
    work_index = choose_probe_works(holder_index, n_holders, cfg.copyright_probes, seed)
    captions = _train_captions(paths)
    generations = np.asarray(
        backend.sample(paths.checkpoint, len(work_index), seed=seed,
                       captions=[captions[int(j)] for j in work_index],
                       guidance_scale=cfg.guidance_scale),
        dtype=np.float32,
    )

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, samples=generations, work_index=work_index,
                     holder=np.asarray(holder_index)[work_index].astype(np.int64))

    atomic_write(paths.copyright_probes, _write)
    return work_index, generations


def prepare_quality_reference(
    run_dir: Path, holders: Sequence[Holder], dataset: str, cfg: MLConfig
):  # -> offchain.quality.QualityReference (torch imported lazily)
    """Train the run's reference classifier and cache the reference statistics, once per run.

    The held-out real images are ``dataset``'s images minus every holder's
    (:func:`offchain.quality.held_out_images`; for ``emoji`` every artist's emoji, labelled by
    category, in color): half (per class) trains the classifier at ``cfg.image_size`` (on the
    CPU), the other half gives the reference statistics (features on ``cfg.device``). Output:
    ``<run_dir>/quality_reference/``; skipped when it is there for the same data and settings.

    Raises:
        ConfigError: unknown ``dataset``.
        StageError: the folder holds a classifier of other data or settings.
    """
    # offchain.quality imports torch at once: imported here to keep it out of start-up.
    from offchain.quality import ClassifierConfig, held_out_images, prepare_reference

    images, labels = held_out_images(holders, dataset)
    return prepare_reference(
        images,
        labels,
        Path(run_dir) / "quality_reference",
        ClassifierConfig(
            image_size=cfg.image_size, epochs=cfg.quality_classifier_epochs, seed=cfg.seed
        ),
        seed=cfg.seed,
        progress=cfg.progress,
        device=_device(cfg),
    )


def assess_quality(paths: RoundPaths, cfg: MLConfig, reference) -> RoundPaths:
    """FID of the round's model against held-out real images, in the reference classifier's
    feature space (docs/quality.md).

    Draws ``cfg.quality_samples`` fresh samples (a seed distinct from ``samples.npy``'s; the
    attribution targets are too few for a usable FID; a conditional backend samples them from
    as many training captions, :func:`draw_prompts` with that seed, with guidance) and writes
    ``quality.json``: ``fid`` (≥ 0, lower is better), the class histogram and entropy of the
    samples, and the classifier's identity (see :func:`offchain.quality.quality_report`; the
    classifier runs on ``cfg.device``), plus ``n_prompts`` for a conditional backend.

    Args:
        reference: the run's :class:`offchain.quality.QualityReference`.
    """
    # offchain.quality imports torch at once: imported here to keep it out of start-up.
    from offchain.quality import quality_report

    if paths.quality.exists():
        return paths
    _require(paths.checkpoint, "quality")
    backend = _backend(cfg)
    seed = _sample_seed(paths, cfg) + 1  # other draws than samples.npy
    extra: dict[str, object] = {}
    if not backend.conditional:
        samples = backend.sample(paths.checkpoint, cfg.quality_samples, seed=seed)
    else:
        prompts = draw_prompts(_train_captions(paths), cfg.quality_samples, seed)
        samples = backend.sample(paths.checkpoint, cfg.quality_samples, seed=seed,
                                 captions=prompts, guidance_scale=cfg.guidance_scale)
        extra["n_prompts"] = len(set(prompts))
    report = quality_report(samples, reference.classifier_dir, reference.stats_path,
                            device=_device(cfg))
    write_json(paths.quality, {"round_id": paths.round_id, **report, **extra})
    return paths


def spent_before(paths: RoundPaths) -> int:
    """Wei allocated by the rounds before this one (read from their ``decision.json``)."""
    spent = 0
    previous = paths.previous()
    while previous is not None:
        _require(previous.decision, "decide (previous round's decision)")
        spent += parse_wei(read_json(previous.decision)["budget_wei"], "budget_wei")
        previous = previous.previous()
    return spent


def decide(
    paths: RoundPaths,
    policy: BudgetPolicy,
    n_rounds: int,
    total_budget_wei: int,
    caps: PayoutCaps | None = None,
) -> RoundPaths:
    """Ask the policy for the round budget (wei) and the holders' weights.

    With ``caps`` (the campaign's on-chain round cap, holder cap and unallocated escrow) the
    policy sees them in its state, with the escrow lowered to the budget not yet allocated
    (``total − spent before``) when that is tighter, and whatever it decides is clipped to them
    (:func:`offchain.policy.apply_caps`): the round total never exceeds the round cap or the
    escrow, nor the holder cap times the holders to be paid.

    Output: ``decision.json`` with ``policy``, ``budget_wei`` (decimal string, after the caps),
    ``policy_budget_wei`` (what the policy returned), ``weights`` (per holder), ``caps`` (the
    caps applied, or null) and the state the policy saw.

    A budget of 0 before the last round while escrow is left becomes 1 wei: the contract posts
    rounds strictly in order and refuses a zero total, so an unposted round would block every
    later one.
    """
    if paths.decision.exists():
        return paths
    for p in (paths.manifest, paths.contributions, paths.copyright):
        _require(p, "decide")
    manifest = read_json(paths.manifest)
    holders = manifest["holders"]
    participating = np.array([h["participating"] for h in holders], dtype=bool)
    features = HolderFeatures(
        contribution=np.array(read_json(paths.contributions)["normalized"], dtype=np.float64),
        copyright_loss=np.array(read_json(paths.copyright)["loss"], dtype=np.float64),
        n_images=np.array([h["n_images"] for h in holders], dtype=np.int64),
        participating=participating,
    )
    remaining = total_budget_wei - spent_before(paths)
    if caps is not None and caps.escrow_wei > remaining:
        caps = PayoutCaps(caps.round_cap_wei, caps.holder_cap_wei, max(remaining, 0))
    state = CampaignState(
        round_id=paths.round_id,
        n_rounds=n_rounds,
        total_budget_wei=total_budget_wei,
        remaining_budget_wei=remaining,
        n_participants=int(participating.sum()),
        n_holders=len(holders),
        caps=caps,
    )
    proposed = policy.decide(state, features)
    decision = apply_caps(proposed, state)  # any policy, not only the hierarchical baselines
    escrow = remaining if caps is None else min(remaining, caps.escrow_wei)
    if decision.budget_wei == 0 and paths.round_id < n_rounds and escrow > 0:
        # The contract takes rounds strictly in order and refuses a zero total
        # (ZeroRoundTotal): a round that pays nothing while budget is left would block every
        # later round. It pays one wei instead (to the highest weight).
        decision = PolicyDecision(budget_wei=1, weights=decision.weights)
    write_json(
        paths.decision,
        {
            "round_id": paths.round_id,
            "policy": policy.name,
            "budget_wei": wei_str(int(decision.budget_wei), "budget_wei"),
            "policy_budget_wei": wei_str(int(proposed.budget_wei), "policy_budget_wei"),
            "weights": [float(w) for w in decision.weights],
            "caps": caps.to_json() if caps is not None else None,
            "state": {
                "n_rounds": n_rounds,
                "total_budget_wei": wei_str(total_budget_wei, "total_budget_wei"),
                "remaining_budget_wei": wei_str(state.remaining_budget_wei, "remaining_budget_wei"),
                "n_participants": state.n_participants,
            },
        },
    )
    return paths


def allocate(paths: RoundPaths, cfg: MLConfig | None = None) -> RoundPaths:
    """Integer wei per holder summing exactly to the budget, and the Merkle tree of the payouts.

    The split is :func:`offchain.allocation.capped_split` under the holder cap recorded in
    ``decision.json`` (no amount above it, the excess shared by the others), or plain
    :func:`offchain.allocation.largest_remainder` for a decision without caps.

    Outputs: ``allocation.json`` (per holder: index, address, amount_wei; the budget; the holder
    cap or null; the Merkle root; the round's provenance, see :func:`round_provenance`) and
    ``tree.json`` (OpenZeppelin StandardMerkleTree dump; leaves ``(index, account, amount)`` for
    every holder paid more than 0 wei). ``cfg`` names the model backend whose checkpoint hash
    the provenance commits to (None: ``ddpm``).

    Raises:
        AllocationError: the budget exceeds the holder cap times the holders with positive
            weight (a decision not clipped by :func:`decide`).
    """
    if paths.allocation.exists():
        return paths
    _require(paths.decision, "allocate")
    decision = read_json(paths.decision)
    holders = read_json(paths.manifest)["holders"]
    budget = parse_wei(decision["budget_wei"], "budget_wei")
    caps = decision.get("caps")  # absent in decisions written before caps were recorded
    holder_cap = parse_wei(caps["holder_cap_wei"], "holder_cap_wei") if caps else None
    if not budget:
        amounts = [0] * len(holders)
    elif holder_cap is not None:
        amounts = capped_split(budget, decision["weights"], holder_cap)
    else:
        amounts = largest_remainder(budget, decision["weights"])
    entries = [
        (h["index"], h["address"], amount)
        for h, amount in zip(holders, amounts, strict=True)
        if amount > 0
    ]
    root = None
    if entries:
        tree = PayoutTree.build(entries)
        write_json(paths.tree, tree.to_json())
        root = tree.root
    provenance = round_provenance(paths, cfg)
    write_json(
        paths.allocation,
        {
            "round_id": paths.round_id,
            "budget_wei": wei_str(budget, "budget_wei"),
            "holder_cap_wei": wei_str_or_none(holder_cap, "holder_cap_wei"),
            "total_wei": wei_str(sum(amounts), "total_wei"),
            "merkle_root": root,
            "provenance": provenance,
            "holders": [
                {
                    "index": h["index"],
                    "name": h["name"],
                    "address": h["address"],
                    "participating": h["participating"],
                    "amount_wei": wei_str(amount, "amount_wei"),
                }
                for h, amount in zip(holders, amounts, strict=True)
            ],
        },
    )
    return paths


def round_provenance(paths: RoundPaths, cfg: MLConfig | None = None) -> dict[str, str]:
    """The round's provenance commitments, each a ``0x``-hex 32-byte SHA-256, signed on chain.

    - ``checkpoint_hash``: the trained model's weights, hashed by the model backend
      (:meth:`~offchain.diffusion.ModelBackend.checkpoint_hash` of ``cfg.backend``; ``ddpm``
      when ``cfg`` is None: :func:`offchain.diffusion.checkpoint_hash`);
    - ``dataset_root``: the manifest's commitment to the participating holders' image hashes;
    - ``attribution_hash``: the attributor's score file ``trak/scores.npy`` (float32 (M, N)).

    Raises:
        StageError: the round's checkpoint, manifest or scores are missing.
    """
    _require(paths.manifest, "provenance")
    scores = paths.trak_dir / SCORES_FILE
    _require(scores, "provenance")
    return {
        "checkpoint_hash": "0x" + _backend(cfg or MLConfig()).checkpoint_hash(paths.checkpoint),
        "dataset_root": "0x" + read_json(paths.manifest)["dataset_root"],
        "attribution_hash": "0x" + sha256_file(scores),
    }


def _hash_list(hex_hashes: Sequence[str]) -> str:
    """SHA-256 over a list of hex digests, in order (a commitment to the list)."""
    digest = hashlib.sha256()
    for h in hex_hashes:
        digest.update(bytes.fromhex(h.removeprefix("0x")))
    return digest.hexdigest()
