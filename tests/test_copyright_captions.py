"""Copyright loss by the paper's procedure: regenerate works from their captions and compare
(offchain.copyright.probes), with RGB works and the text-unet backend's conditional UNet.

Two synthetic holders draw the same 12 subjects ("red apple", "green pear", …) in their own
style, on white like emoji: holder 0 as filled squares, holder 1 as filled circles, same colour,
centre and size per subject. A third holder draws unrelated stripes. The encoder is the round's
UNet encoder over a tiny (untrained) text-conditioned UNet of the ``text-unet`` backend, so the
semantic view runs the conditional network with the null caption.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from offchain.copyright import (
    PROBE_PROCEDURE,
    CopyrightConfig,
    CopyrightResult,
    UNetFeatureEncoder,
    augment,
    choose_probe_works,
    compute_caption_copyright,
    fit_calibration,
    ssim_matrix,
    tiled_l2_matrix,
)
from offchain.copyright.encoders import default_unet_layers
from offchain.diffusion.text_encoder import WordTokenizer
from offchain.diffusion.text_unet import TextUNetConfig, build_model, build_scheduler
from offchain.errors import ConfigError, DataError

S = 16
SUBJECTS = (
    ("red apple", (220, 30, 40)),
    ("green pear", (40, 170, 60)),
    ("blue ball", (40, 70, 220)),
    ("yellow star", (240, 210, 30)),
    ("purple grapes", (130, 50, 170)),
    ("orange carrot", (245, 130, 20)),
    ("brown bear", (120, 70, 30)),
    ("pink flower", (240, 120, 180)),
    ("black cat", (30, 30, 30)),
    ("cyan drop", (30, 200, 210)),
    ("grey rock", (120, 120, 120)),
    ("olive leaf", (110, 130, 30)),
)
N_SUBJECTS = len(SUBJECTS)


def _draw(style: str, colour, cx: float, cy: float, r: float) -> np.ndarray:
    """uint8 (S, S, 3): a ``style`` shape of ``colour`` on white."""
    y, x = np.mgrid[0:S, 0:S].astype(np.float64) + 0.5
    if style == "square":
        inside = (np.abs(x - cx) <= r) & (np.abs(y - cy) <= r)
    elif style == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= r**2
    else:  # stripes: horizontal bars through the whole image
        inside = (np.floor(y / max(r / 2, 1.0)) % 2 == 0) & (np.abs(x - cx) <= S / 3)
    img = np.full((S, S, 3), 255, dtype=np.uint8)
    img[inside] = colour
    return img


def _layout(k: int) -> tuple[float, float, float]:
    rng = np.random.default_rng([7, k])
    r = float(rng.uniform(3.0, 5.0))
    return float(rng.uniform(r + 1, S - r - 1)), float(rng.uniform(r + 1, S - r - 1)), r


def _to_model(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) → float32 (N, 3, S, S) in [−1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@pytest.fixture(scope="module")
def world():
    """Works (36, 3, 16, 16): holder 0 squares, holder 1 circles (the same 12 subjects and
    captions), holder 2 stripes; holder index; the scheduler and UNet encoder of a tiny
    text-unet model; the calibration fitted on the works."""
    squares = [_draw("square", c, *_layout(k)) for k, (_, c) in enumerate(SUBJECTS)]
    circles = [_draw("circle", c, *_layout(k)) for k, (_, c) in enumerate(SUBJECTS)]
    stripes = [_draw("stripes", c, *_layout(k + 50)) for k, (_, c) in enumerate(SUBJECTS[::-1])]
    works = _to_model(np.stack(squares + circles + stripes))
    holder_index = np.repeat(np.arange(3), N_SUBJECTS).astype(np.int64)
    names = [name for name, _ in SUBJECTS]
    captions = names + names + [f"{n} stripes" for n in names[::-1]]
    cfg = TextUNetConfig(
        image_size=S, block_out_channels=(8, 16), text_dim=16, text_heads=2, max_tokens=4
    )
    tokenizer = WordTokenizer.build(captions, cfg.max_tokens)
    net = build_model(cfg, tokenizer, seed=0).eval()
    scheduler = build_scheduler(cfg)
    encoder = UNetFeatureEncoder(net, scheduler)
    calibration = fit_calibration(encoder, works, holder_index, CopyrightConfig())
    return works, holder_index, scheduler, encoder, calibration


def _score(world, probe_work_index, generations) -> CopyrightResult:
    works, holder_index, _, encoder, calibration = world
    return compute_caption_copyright(
        encoder, works, holder_index, 3, np.asarray(probe_work_index), generations,
        CopyrightConfig(), calibration,
    )  # fmt: skip


def _noisy(x: torch.Tensor, sigma: float = 0.03, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=gen)).clamp(-1, 1)


def test_a_copy_of_xs_work_from_xs_caption_charges_x_and_not_y(world):
    """Probes of holder 0's 12 captions that reproduce its squares (near-exact): every probe
    copies holder 0 (loss = share of probes ≈ 1), the circle holder that draws the same
    subjects is not charged."""
    works = world[0]
    probes = np.arange(N_SUBJECTS)
    result = _score(world, probes, _noisy(works[probes]))
    assert result.procedure == PROBE_PROCEDURE
    assert result.n_probes.tolist() == [N_SUBJECTS, 0, 0]
    assert result.loss[0] >= 0.9, result.loss
    assert result.loss[1] <= 0.01 and result.loss[2] <= 0.01, result.loss
    assert result.expected_copies[1] < 0.2, result.expected_copies
    assert result.copies_per_probe[0] == pytest.approx(result.expected_copies[0] / N_SUBJECTS)
    assert result.copies_per_probe[1] == 0.0  # no probe of its own
    assert np.all(result.own_probability >= 0.5), result.own_probability
    assert result.closest_work[0].tolist() == probes.tolist()


def test_a_copy_of_xs_style_from_ys_caption_charges_x_not_y(world):
    """Holder 1's captions ("red apple", … drawn by holder 1 as circles) yield holder 0's
    squares: the copies are charged to holder 0 (whose works they reproduce), not to holder 1
    (whose captions asked for them). The paper's own-pair test alone would miss them."""
    works = world[0]
    probes = N_SUBJECTS + np.arange(N_SUBJECTS)  # holder 1's works → their captions
    result = _score(world, probes, _noisy(works[probes - N_SUBJECTS]))
    assert result.n_probes.tolist() == [0, N_SUBJECTS, 0]
    assert result.charged[1, 0] >= 0.9 * N_SUBJECTS, result.charged
    assert result.expected_copies[0] >= 0.9 * N_SUBJECTS
    assert result.loss[0] >= 0.9, result.loss  # every probe copies holder 0's work
    assert result.loss[1] <= 0.01, result.loss
    assert result.own_probability.max() < 0.5, result.own_probability
    summary = result.summary()
    assert summary["own_copies"][1] < 0.5 and summary["charged"][1][0] >= 0.9 * N_SUBJECTS


def test_both_styles_of_a_subject_are_told_apart(world):
    """Half of each holder's probes reproduce its own style, half the other holder's: each
    holder is charged exactly the copies of its own works."""
    works = world[0]
    probes = np.r_[np.arange(N_SUBJECTS), N_SUBJECTS + np.arange(N_SUBJECTS)]
    swap = np.r_[np.arange(6), N_SUBJECTS + np.arange(6, 12), N_SUBJECTS + np.arange(6),
                 np.arange(6, 12)]  # fmt: skip
    result = _score(world, probes, _noisy(works[swap], seed=1))
    # holder 0's works were reproduced 6 + 6 times (by its own and by holder 1's captions)
    np.testing.assert_allclose(result.expected_copies[:2], [12, 12], atol=1.5)
    np.testing.assert_allclose(result.charged[:2, :2], [[6, 6], [6, 6]], atol=1.0)
    np.testing.assert_allclose(result.loss[:2], [0.5, 0.5], atol=0.06)
    np.testing.assert_allclose(result.copies_per_probe[:2], [1.0, 1.0], atol=0.12)
    assert result.expected_copies[2] < 0.5


def test_generations_that_copy_nothing_charge_nobody(world):
    """Novel images (triangles in new colours) from every holder's captions: loss ≈ 0."""
    rng = np.random.default_rng(3)
    novel = []
    for _ in range(3 * 4):
        y, x = np.mgrid[0:S, 0:S]
        img = np.full((S, S, 3), 255, dtype=np.uint8)
        x0, y0 = rng.integers(2, 8, size=2)
        img[(x - x0 >= 0) & (y - y0 >= 0) & ((x - x0) + (y - y0) <= 8)] = rng.integers(0, 256, 3)
        novel.append(img)
    probes = np.r_[np.arange(4), N_SUBJECTS + np.arange(4), 2 * N_SUBJECTS + np.arange(4)]
    result = _score(world, probes, _to_model(np.stack(novel)))
    assert result.loss.max() <= 0.02, result.loss
    assert result.n_replications.sum() == 0


def test_result_fields_shapes_and_summary(world):
    works = world[0]
    probes = np.array([0, 1, 12, 13, 24])
    result = _score(world, probes, _noisy(works[probes]))
    p, n = probes.size, works.shape[0]
    assert result.n_generations == p
    assert result.pair_probability.shape == (p, n) and result.closest_work.shape == (3, p)
    assert result.probe_work_index.tolist() == probes.tolist()
    assert result.n_probes.tolist() == [2, 2, 1]
    assert result.own_probability.shape == (p,)
    np.testing.assert_allclose(
        result.own_probability, result.pair_probability[np.arange(p), probes], rtol=1e-6
    )
    np.testing.assert_allclose(result.charged.sum(axis=0), result.expected_copies)
    np.testing.assert_allclose(result.own_copies, [
        result.own_probability[:2].sum(), result.own_probability[2:4].sum(),
        result.own_probability[4],
    ])  # fmt: skip
    for name in ("loss", "semantic", "perceptual"):
        value = getattr(result, name)
        assert value.shape == (3,) and np.all((value >= 0) & (value <= 1)), name
    np.testing.assert_allclose(result.loss, result.expected_copies / p)
    # semantic/perceptual/tiled_l2: the probe against its own work, averaged over the holder's
    expected_perc = result.pair_perceptual[np.arange(p), probes]
    assert result.perceptual[0] == pytest.approx(expected_perc[:2].mean(), abs=1e-6)
    summary = json.loads(json.dumps(result.summary()))
    assert summary["procedure"] == "caption_probes"
    assert summary["n_probes"] == [2, 2, 1] and summary["probe_work_index"] == probes.tolist()
    assert len(summary["charged"]) == 3 and len(summary["loss"]) == 3


def test_probe_works_are_seeded_capped_per_holder_and_sorted():
    holder_index = np.r_[np.zeros(10), np.ones(3), np.full(5, 3)].astype(np.int64)
    picks = choose_probe_works(holder_index, 5, per_holder=4, seed=11)
    assert picks.dtype == np.int64
    assert np.bincount(holder_index[picks], minlength=5).tolist() == [4, 3, 0, 4, 0]
    assert np.all(np.diff(picks) > 0)
    assert np.array_equal(picks, choose_probe_works(holder_index, 5, 4, seed=11))
    assert not np.array_equal(picks, choose_probe_works(holder_index, 5, 4, seed=12))
    everything = choose_probe_works(holder_index, 5, 100, seed=0)
    assert everything.tolist() == list(range(18))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"per_holder": 0}, ConfigError, "per_holder"),
        ({"seed": -1}, ConfigError, "seed"),
        ({"holder_index": np.array([0, 5])}, DataError, r"\[0, 3\)"),
        ({"holder_index": np.array([0.0, 1.0])}, DataError, "integers"),
        ({"n_holders": 0}, ConfigError, "n_holders"),
    ],
)
def test_choose_probe_works_rejects_bad_input(kwargs, exc, match):
    args = {"holder_index": np.array([0, 1, 2]), "n_holders": 3, "per_holder": 2, "seed": 0}
    with pytest.raises(exc, match=match):
        choose_probe_works(**{**args, **kwargs})


def test_bad_probes_are_rejected(world):
    works, holder_index, _, encoder, calibration = world
    g = works[:2]
    cases = [
        (np.array([0]), g, "one work per probe"),
        (np.array([0, 99]), g, r"\[0, 36\)"),
        (np.array([0.0, 1.0]), g, "one work per probe"),
        (np.array([0, 1]), works[:2, :1], "differ in image shape"),
        (np.array([0, 1]), works[:2] * 3, r"\[-1, 1\]"),
    ]
    for index, gen, match in cases:
        with pytest.raises(DataError, match=match):
            compute_caption_copyright(
                encoder, works, holder_index, 3, index, gen, None, calibration
            )
    with pytest.raises(DataError, match="holder_index"):
        compute_caption_copyright(
            encoder, works, holder_index[:-1], 3, np.array([0, 1]), g, None, calibration
        )


def test_a_calibration_is_fitted_when_none_is_passed(world):
    works, holder_index, _, encoder, calibration = world
    probes = np.arange(4)
    fresh = compute_caption_copyright(
        encoder, works, holder_index, 3, probes, _noisy(works[probes])
    )
    assert fresh.calibration.coef == pytest.approx(calibration.coef)
    assert fresh.calibration.image_shape == (3, S, S)


# ------------------------------------------------------------------------------ RGB features


def test_the_unet_encoder_runs_the_conditional_unet_with_the_null_caption(world):
    works, _, _, encoder, _ = world
    net = encoder.unet
    assert default_unet_layers(net) == ("unet.down_blocks.1", "unet.mid_block")
    assert encoder.layers == ("unet.down_blocks.1", "unet.mid_block")
    emb = encoder.encode(works[:5])
    assert emb.shape[0] == 5 and torch.isfinite(emb).all()
    # The same embedding as running the wrapper with the null caption's ids explicitly ...
    null_ids = net.null_ids.expand(5, -1)
    scheduler = world[2]
    explicit = UNetFeatureEncoder(_WithCaption(net, null_ids), scheduler)
    assert torch.allclose(explicit.encode(works[:5]), emb, atol=1e-6)
    # ... and not the embedding under a real caption.
    ids = torch.full_like(null_ids, 3)
    captioned = UNetFeatureEncoder(_WithCaption(net, ids), scheduler)
    assert not torch.allclose(captioned.encode(works[:5]), emb, atol=1e-4)


class _WithCaption(torch.nn.Module):
    """The wrapper called with fixed caption ids (a view of the same network)."""

    def __init__(self, net: torch.nn.Module, ids: torch.Tensor) -> None:
        super().__init__()
        self.net, self.ids = net, ids

    def forward(self, x, t):
        return self.net(x, t, self.ids[: x.shape[0]])


def test_rgb_ssim_is_the_mean_over_channels_and_tiled_l2_sees_one_channel(world):
    works = world[0]
    a, b = works[:3], works[12:15]
    ours = ssim_matrix(a, b)
    for i in range(3):
        ref = structural_similarity(
            a[i].permute(1, 2, 0).numpy(), b[i].permute(1, 2, 0).numpy(),
            data_range=2.0, win_size=7, channel_axis=2,
        )  # fmt: skip
        assert ours[i, i].item() == pytest.approx(ref, abs=1e-5)
    red_only = works[:1].clone()
    red_only[:, 0] = -red_only[:, 0]  # change the red channel only
    assert tiled_l2_matrix(red_only, works[:1]).item() > 0.5
    assert ssim_matrix(red_only, works[:1]).item() < 0.9


def test_colour_jitter_changes_saturation_of_rgb_but_not_the_grayscale_draws(world):
    works = world[0][:4]
    jittered = augment(works, "colour", seed=3)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)

    def chroma(x):
        return (x - (x * luma).sum(1, keepdim=True)).abs().mean((1, 2, 3))

    ratio = chroma(jittered) / chroma(works)
    assert not torch.allclose(ratio, torch.ones_like(ratio), atol=0.05)
    # Grayscale: brightness then contrast from the same stream as before saturation existed.
    gray = works.mean(1, keepdim=True)
    rng = np.random.default_rng([3, 1 + 3])  # [seed, position of "colour" + 1]
    b = torch.from_numpy(rng.uniform(-0.2, 0.2, size=4)).float().view(-1, 1, 1, 1)
    c = torch.from_numpy(rng.uniform(0.7, 1.3, size=4)).float().view(-1, 1, 1, 1)
    mean = gray.mean((1, 2, 3), keepdim=True)
    expected = ((gray - mean) * c + mean + b).clamp(-1, 1)
    assert torch.allclose(augment(gray, "colour", seed=3), expected, atol=1e-6)


def test_calibration_on_rgb_works_reports_held_out_precision_and_recall(world):
    calibration = world[4]
    assert calibration.image_shape == (3, S, S)
    overall = next(
        r for r in calibration.table
        if r["split"] == "held-out" and r["group"] == "overall (fitted types)"
        and r["threshold"] == "replication"
    )  # fmt: skip
    assert overall["precision"] >= 0.8 and overall["recall"] >= 0.8, overall
    groups = {r["group"] for r in calibration.table}
    assert {"crop", "colour", "jpeg", "negatives:nearest_ssim"} <= groups
