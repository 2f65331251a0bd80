"""The text-unet backend: tokenizer, caption encoder, checkpoints, continuation, guidance, devices,
and (measured) that samples for a caption look like that caption's training images."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from offchain.diffusion import ModelBackend, get_backend
from offchain.diffusion.text_encoder import (
    CaptionEncoder,
    CaptionEncoderConfig,
    WordTokenizer,
    words,
)
from offchain.diffusion.text_unet import TextUNetBackend, TextUNetConfig
from offchain.errors import ConfigError, DataError, StageError

TINY = TextUNetConfig(
    image_size=16,
    block_out_channels=(16, 32),
    norm_num_groups=8,
    mid_attention=False,
    text_dim=32,
    max_tokens=6,
    train_steps=3,
    batch_size=8,
    sample_batch_size=8,
    lr_warmup_steps=0,
    num_inference_steps=4,
    num_threads=1,  # tiny models gain nothing from threads on a busy CPU
    device="cpu",
)
RED, BLUE = "red apple", "blue whale"


def _shapes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 16, 16, 3) each: red squares and blue discs of varying size and place on white."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    red = np.full((n, 16, 16, 3), 255, np.uint8)
    blue = np.full((n, 16, 16, 3), 255, np.uint8)
    for i in range(n):
        top, left = rng.integers(1, 6, size=2)
        side = rng.integers(7, 10)
        red[i, top : top + side, left : left + side] = (220, 30, 30)
        cy, cx = rng.integers(6, 10, size=2)
        blue[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(3, 6) ** 2] = (30, 60, 220)
    return red, blue


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list[str]]:
    red, blue = _shapes(8)
    images = np.concatenate([red, blue])
    captions = [RED] * 8 + [BLUE] * 7 + [""]  # the last image has no caption
    return images, captions


@pytest.fixture(scope="module")
def round_one(tmp_path_factory: pytest.TempPathFactory, data) -> Path:
    images, captions = data
    out = tmp_path_factory.mktemp("r1") / "checkpoint"
    return TextUNetBackend(TINY).train_round(images, out, seed=0, captions=captions, progress=False)


# --- tokenizer and caption encoder --------------------------------------------------------------


def test_words_are_lower_case_runs_of_letters_and_digits() -> None:
    assert words("Red apple: 1st!  Café_au-lait") == ["red", "apple", "1st", "café", "au", "lait"]
    assert words("") == [] and words(" -- ") == []


def test_the_vocabulary_ranks_words_by_frequency_after_the_special_tokens() -> None:
    tok = WordTokenizer.build(["blue whale", "red apple", "Red  car", ""], max_tokens=4)
    assert tok.vocab == ["<pad>", "<unk>", "<bos>", "red", "apple", "blue", "car", "whale"]
    assert tok.ids("red car") == [2, 3, 6, 0]
    assert tok.ids("") == [2, 0, 0, 0]  # the null caption
    assert tok.ids("green red apple car") == [2, 1, 3, 4]  # <unk>, cut at max_tokens
    assert tok.unknown_fraction(["green apple", ""]) == 0.5
    capped = WordTokenizer.build(["a a b c"], max_tokens=4, max_vocab=4)
    assert capped.vocab == ["<pad>", "<unk>", "<bos>", "a"]


def test_the_tokenizer_round_trips_through_json_and_encodes_batches() -> None:
    tok = WordTokenizer.build(["red apple", "piñata"], max_tokens=5)
    again = WordTokenizer.from_json(tok.to_json())
    assert again.vocab == tok.vocab and again.max_tokens == 5
    ids = again(["piñata", "red"])
    assert ids.dtype == torch.int64 and ids.tolist() == [tok.ids("piñata"), tok.ids("red")]
    assert again([]).shape == (0, 5)
    with pytest.raises(DataError, match="not one string"):
        again.encode("red apple")
    with pytest.raises(DataError, match="string"):
        again.encode(["red", 3])
    with pytest.raises(ConfigError, match="tokenizer"):
        WordTokenizer.from_json('{"vocab": []}')
    with pytest.raises(ConfigError, match="start with"):
        WordTokenizer(["red", "<pad>"], 4)


def test_the_caption_encoder_ignores_padding_and_tells_captions_apart() -> None:
    torch.manual_seed(0)
    encoder = CaptionEncoder(CaptionEncoderConfig(vocab_size=8, max_tokens=5, dim=16,
                                                  heads=4, pooled_dim=24)).eval()
    ids = torch.tensor([[2, 3, 4, 0, 0], [2, 5, 0, 0, 0], [2, 3, 4, 0, 0]])
    sequence, pooled = encoder(ids)
    assert sequence.shape == (3, 5, 16) and pooled.shape == (3, 24)
    assert bool((sequence[ids == 0] == 0).all())
    assert torch.allclose(pooled[0], pooled[2]) and not torch.allclose(pooled[0], pooled[1])
    with pytest.raises(DataError, match=r"\(B, 5\)"):
        encoder(ids[:, :4])


# --- the backend --------------------------------------------------------------------------------


def test_text_unet_is_a_registered_conditional_backend_built_from_settings() -> None:
    settings = SimpleNamespace(image_size=32, train_steps=7, device="cpu", guidance_scale=2.5)
    backend = get_backend("text-unet").from_settings(settings)
    assert isinstance(backend, ModelBackend) and backend.conditional
    cfg = backend.config
    assert (cfg.image_size, cfg.train_steps, cfg.device, cfg.guidance_scale) == (32, 7, "cpu", 2.5)
    older = get_backend("text-unet").from_settings(SimpleNamespace(image_size=16, train_steps=3))
    assert (older.config.device, older.config.guidance_scale) == ("auto", 3.0)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="conditioning"):
        TextUNetConfig(conditioning="concat")
    with pytest.raises(ConfigError, match="caption_dropout"):
        TextUNetConfig(caption_dropout=1.0)
    with pytest.raises(ConfigError, match="image_size"):
        TextUNetConfig(image_size=18)


def test_preprocess_gives_rgb_and_replicates_gray() -> None:
    backend = TextUNetBackend(TINY)
    gray = np.zeros((2, 20, 20), np.uint8)
    gray[1] = 255
    x = backend.preprocess(gray)
    assert x.shape == (2, 3, 16, 16)
    assert float(x[1].min()) == pytest.approx(1.0) and float(x[0].max()) == pytest.approx(-1.0)
    with pytest.raises(DataError):
        backend.preprocess(np.zeros((2, 16, 16, 4), np.uint8))


def test_a_round_saves_a_complete_checkpoint_that_loads_the_same_weights(
    round_one: Path, data
) -> None:
    backend = TextUNetBackend(TINY)
    assert backend.is_complete(round_one)
    names = sorted(p.relative_to(round_one).as_posix() for p in round_one.rglob("*") if p.is_file())
    assert names == [
        "scheduler/scheduler_config.json", "text_encoder/config.json",
        "text_encoder/model.safetensors", "text_unet.json", "tokenizer.json", "train_log.json",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    ]
    assert [p.name for p in round_one.parent.iterdir()] == ["checkpoint"]  # no temp folder left
    log = json.loads((round_one / "train_log.json").read_text())
    assert log["n_images"] == 16 and log["n_captioned"] == 15 and len(log["loss"]) == 3
    assert log["vocab_size"] == 7 and log["device"] == "cpu"
    model = backend.load(round_one)
    assert not model.unet.training
    params = dict(backend.trainable_parameters(model))
    assert any(k.startswith("text_encoder.") for k in params)
    assert any(k.startswith("unet.") for k in params)
    again = backend.load(round_one)
    assert all(torch.equal(v, again.unet.state_dict()[k]) for k, v in model.unet.state_dict().items())
    # vocabulary: apple, red (8 each, alphabetical), blue, whale (7 each)
    assert model.encode_captions([RED, "green"]).tolist() == [[2, 4, 3, 0, 0, 0], [2, 1, 0, 0, 0, 0]]


def test_the_model_without_captions_predicts_for_the_null_caption(round_one: Path) -> None:
    model = TextUNetBackend(TINY).load(round_one)
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        plain = model.unet(x, t).sample
        null = model.unet(x, t, model.encode_captions(["", ""])).sample
        red = model.unet(x, t, model.encode_captions([RED, RED])).sample
    assert plain.shape == (2, 3, 16, 16) and torch.equal(plain, null)
    assert not torch.allclose(plain, red)


def test_saving_a_loaded_model_keeps_the_hash_which_covers_the_caption_encoder(
    tmp_path: Path, round_one: Path
) -> None:
    backend = TextUNetBackend(TINY)
    copy = backend.save(backend.load(round_one), tmp_path / "copy", {"copied": True})
    assert backend.checkpoint_hash(copy) == backend.checkpoint_hash(round_one)
    model = backend.load(copy)
    with torch.no_grad():
        model.unet.text_encoder.token_embedding.weight[3] += 1.0
    changed = backend.save(model, tmp_path / "changed", {})
    assert backend.checkpoint_hash(changed) != backend.checkpoint_hash(round_one)
    fresh = backend.build(seed=0, captions=[RED])
    assert len(fresh.encode_captions.vocab) == 5 and fresh.unet.training


def test_training_is_deterministic_and_continues_from_a_checkpoint(
    tmp_path: Path, round_one: Path, data
) -> None:
    images, captions = data
    backend = TextUNetBackend(TINY)
    again = backend.train_round(images, tmp_path / "again", seed=0, captions=captions,
                                progress=False)
    assert backend.checkpoint_hash(again) == backend.checkpoint_hash(round_one)
    # Zero steps from round one: the same weights, the round-one tokenizer (new words: <unk>).
    zero = TextUNetBackend(dataclasses.replace(TINY, train_steps=0))
    copy = zero.train_round(images[:2], tmp_path / "zero", seed=5, init_checkpoint=round_one,
                            captions=["green pear", "red pear"], progress=False)
    assert backend.checkpoint_hash(copy) == backend.checkpoint_hash(round_one)
    assert (copy / "tokenizer.json").read_text() == (round_one / "tokenizer.json").read_text()
    log = json.loads((copy / "train_log.json").read_text())
    assert log["unknown_word_fraction"] == 0.75
    assert log["init_checkpoint_hash"] == backend.checkpoint_hash(round_one)
    nxt = backend.train_round(images, tmp_path / "r2", seed=1, init_checkpoint=round_one,
                              captions=captions, progress=False)
    assert backend.checkpoint_hash(nxt) != backend.checkpoint_hash(round_one)
    # A complete checkpoint is not retrained (empty images would raise).
    assert backend.train_round(np.zeros((0, 4, 4), np.uint8), nxt, seed=1) == nxt


def test_training_refuses_bad_captions_other_architectures_and_partial_folders(
    tmp_path: Path, round_one: Path, data
) -> None:
    images, captions = data
    backend = TextUNetBackend(TINY)
    with pytest.raises(DataError, match="16 strings"):
        backend.train_round(images, tmp_path / "a", seed=0, captions=captions[:-1])
    with pytest.raises(DataError, match="not a string"):
        backend.train_round(images, tmp_path / "a", seed=0, captions=[None] * 16)
    wider = TextUNetBackend(dataclasses.replace(TINY, block_out_channels=(16, 48)))
    with pytest.raises(ConfigError, match="block_out_channels"):
        wider.train_round(images, tmp_path / "a", seed=0, init_checkpoint=round_one,
                          captions=captions, progress=False)
    with pytest.raises(StageError, match="incomplete"):
        backend.train_round(images, tmp_path / "a", seed=0, init_checkpoint=tmp_path / "none")
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    with pytest.raises(StageError, match="not a complete checkpoint"):
        backend.train_round(images, tmp_path / "partial", seed=0)
    assert not (tmp_path / "a").exists()


def test_sampling_is_seeded_and_guidance_behaves_as_its_formula(round_one: Path) -> None:
    backend = TextUNetBackend(dataclasses.replace(TINY, sample_batch_size=3))
    caps = [RED, BLUE, RED, ""]
    first = backend.sample(round_one, 4, seed=3, captions=caps)
    assert first.shape == (4, 3, 16, 16) and first.dtype == np.float32
    assert first.min() >= -1.0 and first.max() <= 1.0
    assert np.array_equal(first, backend.sample(round_one, 4, seed=3, captions=caps))
    assert not np.array_equal(first, backend.sample(round_one, 4, seed=4, captions=caps))
    # w = 0 is unconditional: the captions do not matter; None means null captions.
    uncond = backend.sample(round_one, 4, seed=3, captions=caps, guidance_scale=0.0)
    assert np.array_equal(uncond, backend.sample(round_one, 4, seed=3))
    # w = 1 is the plain conditional model, w = 3 extrapolates away from it.
    cond = backend.sample(round_one, 4, seed=3, captions=caps, guidance_scale=1.0)
    assert not np.allclose(cond, uncond) and not np.allclose(cond, first)
    assert np.allclose(backend.sample(round_one, 4, seed=3, captions=caps, guidance_scale=3.0),
                       first)


def test_sampling_refuses_mismatched_captions_and_settings(round_one: Path) -> None:
    backend = TextUNetBackend(TINY)
    with pytest.raises(ConfigError, match="1 captions for 2 samples"):
        backend.sample(round_one, 2, seed=0, captions=[RED])
    with pytest.raises(ConfigError, match="n_samples"):
        backend.sample(round_one, 0, seed=0)
    with pytest.raises(ConfigError, match="guidance_scale"):
        backend.sample(round_one, 1, seed=0, guidance_scale=-1.0)
    with pytest.raises(ConfigError, match="image_size"):
        TextUNetBackend(dataclasses.replace(TINY, image_size=32)).sample(round_one, 1, seed=0)
    with pytest.raises(StageError, match="incomplete"):
        backend.sample(round_one.parent / "missing", 1, seed=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_on_a_cpu_machine_is_a_config_error(tmp_path: Path, data) -> None:
    images, captions = data
    backend = TextUNetBackend(dataclasses.replace(TINY, device="cuda"))
    with pytest.raises(ConfigError, match="CUDA is not available"):
        backend.train_round(images, tmp_path / "ck", seed=0, captions=captions)
    assert not (tmp_path / "ck").exists()


def test_cross_attention_conditioning_trains_samples_and_uses_the_caption(
    tmp_path: Path, data
) -> None:
    images, captions = data
    backend = TextUNetBackend(dataclasses.replace(TINY, conditioning="cross", train_steps=2))
    ckpt = backend.train_round(images, tmp_path / "ck", seed=0, captions=captions, progress=False)
    model = backend.load(ckpt)
    assert type(model.unet.unet).__name__ == "UNet2DConditionModel"
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([300])
    with torch.no_grad():
        red = model.unet(x, t, model.encode_captions([RED])).sample
        blue = model.unet(x, t, model.encode_captions([BLUE])).sample
    assert not torch.allclose(red, blue)
    assert backend.sample(ckpt, 2, seed=0, captions=[RED, BLUE]).shape == (2, 3, 16, 16)


# --- measured: the caption steers the samples ---------------------------------------------------


def test_samples_for_a_caption_are_closer_to_that_captions_training_images(tmp_path: Path) -> None:
    """Red squares "red apple" vs blue discs "blue whale": 200 steps, then 8 samples per caption;
    distance = pixel MSE to the nearest training image of a class. Measured for training seeds
    1 (this test), 0, 2, 3 (sampling seed + 1): red samples 0.40 / 0.43 / 0.45 / 0.64 to the red
    images against 0.58 / 0.53 / 0.55 / 0.88 to the blue ones; blue samples 0.48 / 0.21 / 0.63 /
    0.66 against 0.65 / 0.46 / 0.69 / 0.78; 100 / 81 / 81 / 81 % of samples nearer their own
    class.
    """
    red, blue = _shapes(16)
    images = np.concatenate([red, blue])
    cfg = dataclasses.replace(TINY, max_tokens=16, train_steps=200, batch_size=16,
                              learning_rate=2e-3, lr_warmup_steps=10, num_inference_steps=25)
    backend = TextUNetBackend(cfg)
    ckpt = backend.train_round(images, tmp_path / "ck", seed=1, captions=[RED] * 16 + [BLUE] * 16,
                               progress=False)
    samples = backend.sample(ckpt, 16, seed=2, captions=[RED] * 8 + [BLUE] * 8).reshape(16, -1)
    train = backend.preprocess(images).numpy().reshape(32, -1)
    mse = ((samples[:, None, :] - train[None]) ** 2).mean(axis=2)  # (16 samples, 32 images)
    to_red, to_blue = mse[:, :16].min(axis=1), mse[:, 16:].min(axis=1)
    assert to_red[:8].mean() < to_blue[:8].mean()  # "red apple" samples look like red squares
    assert to_blue[8:].mean() < to_red[8:].mean()  # "blue whale" samples like blue discs
    nearer_own = np.concatenate([to_red[:8] < to_blue[:8], to_blue[8:] < to_red[8:]])
    assert nearer_own.mean() >= 0.75
