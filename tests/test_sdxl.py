"""The sd-lora backend on a tiny SDXL folder built from configs (no download): the folder loads
through ``model_path`` as a ``StableDiffusionXLPipeline``, the ε-network gives the UNet SDXL's
conditioning (two encoders, pooled text embeds, time ids), LoRA rounds train and save only the
adapter, continue, sample from captions, and the output differentiates over the LoRA parameters
per example with per-example caption ids (TRAK's vmap)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sd_fixture import build_tiny_sdxl, tiny_backend

from offchain.attribution.model_output import DTrakOutput, make_noise
from offchain.diffusion.sd_base import is_sdxl, lora_parameters
from offchain.diffusion.sd_lora import ADAPTER_FILE, SDLoraBackend, load_base, missing_model_parts
from offchain.errors import ConfigError

CAPTIONS = ["red apple", "blue", "red", ""]


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDXL folder written by ``StableDiffusionXLPipeline.save_pretrained``."""
    return build_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl")


@pytest.fixture(scope="module")
def backend(sdxl_folder: Path, tmp_path_factory) -> SDLoraBackend:
    return tiny_backend(sdxl_folder, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(4, 12, 12, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def rounds(backend: SDLoraBackend, images: np.ndarray, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rounds")
    first = backend.train_round(images, root / "r1", seed=1, progress=False, captions=CAPTIONS)
    second = backend.train_round(images, root / "r2", seed=2, init_checkpoint=first,
                                 progress=False, captions=CAPTIONS)
    return first, second


def test_sdxl_folder_loads_through_model_path(sdxl_folder: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    assert is_sdxl(sdxl_folder) and missing_model_parts(sdxl_folder) == []
    pipe = load_base(sdxl_folder)
    assert isinstance(pipe, StableDiffusionXLPipeline)
    assert pipe.unet.config.addition_embed_type == "text_time"
    broken = tmp_path / "broken"
    broken.mkdir()
    for part in ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (broken / part).symlink_to(sdxl_folder / part, target_is_directory=part != "model_index.json")
    assert missing_model_parts(broken) == ["text_encoder_2/", "tokenizer_2/"]
    with pytest.raises(ConfigError, match=r"missing text_encoder_2/, tokenizer_2/"):
        load_base(broken)


def test_wrapper_gives_the_unet_sdxl_conditioning(backend: SDLoraBackend) -> None:
    model = backend.build(seed=0)
    net = model.unet
    ids = model.encode_captions(["red apple", ""])
    assert ids.dtype == torch.int64 and ids.shape == (2, 32)  # both tokenizers, 16 + 16
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        out = net(z, t, ids).sample
        null = net(z, t).sample
        # what StableDiffusionXLPipeline.encode_prompt + _get_add_time_ids give the UNet
        ids_1, ids_2 = ids[:, :16], ids[:, 16:]
        enc_1 = net.text_encoder(ids_1, output_hidden_states=True)
        enc_2 = net.text_encoder_2(ids_2, output_hidden_states=True)
        hidden = torch.cat([enc_1.hidden_states[-2], enc_2.hidden_states[-2]], dim=-1)
        time_ids = torch.tensor([[8.0, 8.0, 0.0, 0.0, 8.0, 8.0]]).repeat(2, 1)
        expected = net.unet(z, t, encoder_hidden_states=hidden, added_cond_kwargs={
            "text_embeds": enc_2.text_embeds, "time_ids": time_ids}).sample
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(null[1], out[1])  # None is the empty caption
    assert not torch.allclose(out[0], null[0])  # the caption conditions the output
    assert type(model.scheduler).__name__ == "DDPMScheduler"  # training noise, not Euler's σ
    with pytest.raises(ConfigError, match="one length L"):  # L1 != L2 cannot be concatenated
        type(net)(net.unet, net.text_encoder, net.null_ids[:24], net.text_encoder_2, split=16)


def test_sdxl_round_saves_only_the_adapter_and_continues(backend, rounds) -> None:
    first, second = rounds
    for ckpt in rounds:
        assert sorted(p.name for p in ckpt.iterdir()) == [
            ADAPTER_FILE, "sd_lora.json", "train_log.json"]
    log = json.loads((second / "train_log.json").read_text())
    assert log["init_checkpoint_hash"] == backend.checkpoint_hash(first)
    assert log["latent_cache_hits"] == 4
    assert np.isfinite(log["loss"]).all()
    assert backend.checkpoint_hash(first) != backend.checkpoint_hash(second)
    model = backend.load(second)
    names = [n for n, _ in backend.trainable_parameters(model)]
    assert names and all(n.startswith("unet.") for n in names)  # no adapter on the encoders
    assert backend.checkpoint_hash(backend.save(model, second.parent / "again", {})) == \
        backend.checkpoint_hash(second)


def test_sdxl_samples_from_captions_are_seeded(backend, rounds) -> None:
    a = backend.sample(rounds[1], 3, seed=5, captions=["red apple", "blue", ""])
    b = backend.sample(rounds[1], 3, seed=5, captions=["red apple", "blue", ""])
    c = backend.sample(rounds[1], 3, seed=6, captions=["red apple", "blue", ""])
    assert a.shape == (3, 3, 8, 8) and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= -1.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_per_example_lora_gradients_with_caption_ids(backend, rounds, images) -> None:
    """TRAK's featurizer call: vmap over examples of grad of the D-TRAK output with respect to
    the LoRA parameters only, each example with its own caption ids (L,)."""
    model = backend.load(rounds[1])
    net = model.unet
    lora = {n: p.detach() for n, p in lora_parameters(net)}
    frozen = {n: p.detach() for n, p in net.named_parameters() if n not in lora}
    frozen.update(dict(net.named_buffers()))
    latents = model.encode_images(backend.preprocess(images))  # (4, 4, 8, 8)
    noise = make_noise(range(4), 2, tuple(latents.shape[1:]), seed=0, stream=0)
    ids = model.encode_captions(CAPTIONS)
    output = DTrakOutput(model.scheduler.alphas_cumprod, 2)
    grad = torch.func.grad(output.get_output, argnums=1)
    per_example = torch.func.vmap(grad, in_dims=(None, None, None, 0, 0, 0))(
        net, lora, frozen, latents, noise, ids)
    assert set(per_example) == set(lora)
    flat = torch.cat([g.reshape(4, -1) for g in per_example.values()], dim=1)
    assert flat.shape == (4, sum(p.numel() for p in lora.values()))
    assert torch.isfinite(flat).all() and bool((flat.abs().sum(1) > 0).all())
    # row 0 equals the unbatched gradient of example 0 with its caption
    one = grad(net, lora, frozen, latents[0], noise[0], ids[0])
    torch.testing.assert_close(flat[0], torch.cat([g.reshape(-1) for g in one.values()]),
                               rtol=1e-4, atol=1e-6)


def test_a_v_prediction_folder_is_refused(tmp_path: Path) -> None:
    from sd_fixture import build_tiny_sd

    folder = build_tiny_sd(tmp_path / "sd-v")
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    with pytest.raises(ConfigError, match="'v_prediction'.*ε-prediction models only"):
        load_base(folder)


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_trak_scores_an_sdxl_model_over_its_adapters(backend, rounds, images, tmp_path) -> None:
    """The attribute stage's path: attributed_model (LoRA parameters only), latents from
    unet_inputs, TrakAttributor.scores with the captions of both tokenizers."""
    from offchain.attribution.attributed_model import attributed_model, unet_inputs
    from offchain.attribution.trak import TrakConfig
    from offchain.attribution.trak_attributor import TrakAttributor

    model = backend.load(rounds[1])
    adapter = sum(p.numel() for _, p in lora_parameters(model.unet))
    model = attributed_model(backend, model)
    latents = unet_inputs(model, backend.preprocess(images))
    attributor = TrakAttributor(TrakConfig(proj_dim=16, num_timesteps=2, batch_size=4))
    scores = attributor.scores(model, latents, latents[:2], tmp_path / "trak", seed=0,
                               progress=False, train_captions=CAPTIONS,
                               target_captions=CAPTIONS[:2])
    assert scores.shape == (2, 4) and np.isfinite(scores).all()
    meta = json.loads((tmp_path / "trak" / "meta.json").read_text())
    assert meta["projector"]["grad_dim"] == adapter
