"""Memorization test: the copyright loss must single out a holder whose works a DDPM memorized.

Slow (``-m slow``): trains two small DDPMs with the project's own ``train_round`` on MNIST.
Holder 0 owns 4 digits, each repeated 48 times in the training set (192 of 288 images), so
the model memorizes them; holders 1–3 own 32 distinct digits each. Model B is trained the same
way on holders 1–3 only. Both are scored against all 100 distinct works (holder 0's four
included), with the calibration fitted on the fly on each model's own UNet encoder.

The test can fail: with 400 instead of 600 training steps and 24 instead of 48 repeats the
model has not memorized yet and holder 0 gets 0.15 expected copies against 0.04–0.06 for the
others (measured), so the first assertion fails; so would any scoring that ignores which work
a generation resembles.

Measured (single thread, shared 2-core CPU; docs/copyright.md §6): model A gives holder 0
19.2 expected copies among 64 generations (35 past the replication threshold) against ≤ 0.04
for every other holder; model B gives holder 0 0.02 against 0.03–0.04, 0 replications.
Runtime ≈ 2 minutes for both tests, almost all of it training.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import time

import numpy as np
import pytest
import torch

from offchain.copyright import CopyrightResult, compute_copyright_losses
from offchain.data.mnist import load_mnist
from offchain.diffusion import (
    DiffusionConfig,
    generate_samples,
    load_checkpoint,
    preprocess,
    train_round,
)

pytestmark = pytest.mark.slow

N_MEMORIZED, REPEATS, N_OTHER_HOLDERS, PER_HOLDER = 4, 48, 3, 32
N_SAMPLES = 64
CFG = DiffusionConfig(train_steps=600, batch_size=32, num_threads=1)

MIN_EXCESS_COPIES = 2.0
"""Model A: holder 0's expected copies exceed every other holder's by at least this many
generations (of 64)."""
MAX_EXCESS_WITHOUT = 0.25
"""Model B: holder 0's expected copies exceed the largest other holder's by at most this."""


@pytest.fixture(scope="module")
def data():
    images, _ = load_mnist()
    pick = np.random.default_rng(0).choice(
        len(images), N_MEMORIZED + N_OTHER_HOLDERS * PER_HOLDER, replace=False
    )
    memorized, others = images[pick[:N_MEMORIZED]], images[pick[N_MEMORIZED:]]
    works = np.concatenate([memorized, others])  # the 100 distinct works that are scored
    holder_index = np.r_[
        np.zeros(N_MEMORIZED, dtype=np.int64),
        np.repeat(np.arange(1, N_OTHER_HOLDERS + 1), PER_HOLDER),
    ]
    return memorized, others, works, holder_index


def _train_and_score(train_images, works, holder_index, out_dir) -> tuple[CopyrightResult, float]:
    torch.set_num_threads(1)
    start = time.perf_counter()
    ckpt = train_round(train_images, out_dir, CFG, progress=False)
    samples = generate_samples(ckpt, N_SAMPLES, CFG, seed=1)
    unet, scheduler = load_checkpoint(ckpt)
    result = compute_copyright_losses(
        unet, scheduler, samples, preprocess(works, 16), holder_index, 1 + N_OTHER_HOLDERS
    )
    return result, time.perf_counter() - start


def test_a_model_that_memorized_a_holders_works_singles_that_holder_out(data, tmp_path):
    memorized, others, works, holder_index = data
    train = np.concatenate([np.repeat(memorized, REPEATS, axis=0), others])
    result, seconds = _train_and_score(train, works, holder_index, tmp_path / "with")
    expected = result.expected_copies
    print(
        f"with holder 0: expected copies {np.round(expected, 2)}, replications "
        f"{result.n_replications}, copies {result.n_copies}, {seconds:.0f} s"
    )
    assert expected[0] >= expected[1:].max() + MIN_EXCESS_COPIES, expected
    assert result.n_replications[0] > result.n_replications[1:].max(), result.n_replications
    # The generations counted as copies point at one of holder 0's four works.
    copied = result.pair_probability[:, :N_MEMORIZED].max(1) >= (
        result.calibration.replication_threshold
    )
    assert np.all(result.closest_work[0, copied] < N_MEMORIZED)


def test_a_model_trained_without_the_holder_does_not_single_it_out(data, tmp_path):
    _, others, works, holder_index = data
    result, seconds = _train_and_score(others, works, holder_index, tmp_path / "without")
    expected = result.expected_copies
    print(
        f"without holder 0: expected copies {np.round(expected, 2)}, replications "
        f"{result.n_replications}, {seconds:.0f} s"
    )
    assert expected[0] <= expected[1:].max() + MAX_EXCESS_WITHOUT, expected
    assert result.n_replications[0] == 0, result.n_replications
