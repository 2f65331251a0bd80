"""The policy environment's calibration: fits on synthetic rounds, JSON, and a real tiny sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from offchain.errors import ConfigError, DataError
from offchain.layout import RoundPaths
from offchain.policy.calibrate import (
    QUANTILE_LEVELS,
    EnvCalibration,
    env_calibration_report,
    fit_env_calibration,
)
from offchain.rounds.measure import participation_design
from offchain.utils import write_json

SIZES = np.array([24, 32, 40, 48, 64, 80, 96, 128])
FID_COEF = (9.0, -0.6, -0.3)
KAPPA = 0.8


def write_round(
    run_dir: Path,
    round_id: int,
    participating: np.ndarray,
    contribution: np.ndarray | None,
    loss: np.ndarray | None,
    fid: float | None,
    sizes: np.ndarray = SIZES,
) -> None:
    """The round artifacts the fit reads, in the stages' layout and keys."""
    paths = RoundPaths(run_dir, round_id)
    write_json(
        paths.manifest,
        {
            "round_id": round_id,
            "n_holders": len(sizes),
            "n_train": int(sizes[participating].sum()),
            "holders": [
                {"index": i, "name": f"holder_{i}", "n_images": int(n), "participating": bool(p)}
                for i, (n, p) in enumerate(zip(sizes, participating, strict=True))
            ],
        },
    )
    if contribution is not None:
        write_json(paths.contributions, {"normalized": [float(x) for x in contribution]})
    if loss is not None:
        write_json(paths.copyright, {"loss": [float(x) for x in loss]})
    if fid is not None:
        write_json(paths.quality, {"fid": float(fid)})


def synthetic_runs(root: Path, n_campaigns: int = 5, n_rounds: int = 4, seed: int = 0) -> list:
    """Rounds drawn from the calibration's own model with known parameters."""
    rng = np.random.default_rng(seed)
    runs = []
    for c in range(n_campaigns):
        run_dir = root / f"campaign_{c}"
        for t, mask in enumerate(participation_design(len(SIZES), n_rounds, seed, c), start=1):
            d_t = SIZES[mask].sum()
            a, b, cc = FID_COEF
            fid = np.exp(a + b * np.log(d_t) + cc * np.log(t) + 0.02 * rng.normal())
            share = np.zeros(len(SIZES))
            share[mask] = SIZES[mask] ** KAPPA * np.exp(0.05 * rng.normal(size=mask.sum()))
            if mask.sum() > 2:
                share[np.flatnonzero(mask)[0]] = 0.0  # TRAK's positive part can zero a holder
            share /= share.sum()
            loss = np.where(mask, rng.uniform(0, 0.01, len(SIZES)), 0.0)
            write_round(run_dir, t, mask, share, loss, fid)
        runs.append(run_dir)
    return runs


def test_fit_recovers_known_fid_and_contribution_parameters(tmp_path: Path) -> None:
    runs = synthetic_runs(tmp_path)
    cal = fit_env_calibration(runs, "mnist")
    np.testing.assert_allclose(cal.fid_coef, FID_COEF, atol=0.15)
    assert cal.fid_r2 > 0.95 and 0.005 < cal.fid_residual_std < 0.05
    assert cal.n_fid_obs == 20
    assert cal.contribution_exponent == pytest.approx(KAPPA, abs=0.05)
    assert cal.contribution_noise == pytest.approx(0.05, abs=0.02)
    assert cal.contribution_r2 > 0.9
    participants = sum(int(np.sum(r["participating"])) for r in cal.rounds)
    zeros = sum(
        1
        for r in cal.rounds
        for c, p in zip(r["contribution"], r["participating"], strict=True)
        if p and c == 0
    )
    assert cal.contribution_zero_fraction == pytest.approx(zeros / participants)
    assert cal.n_contribution_obs == participants - zeros
    assert cal.n_copyright_obs == participants
    assert len(cal.copyright_loss_quantiles) == len(QUANTILE_LEVELS) == 11
    assert 0 <= cal.copyright_loss_quantiles[0] <= cal.copyright_loss_mean
    assert cal.copyright_loss_quantiles[-1] <= 0.01
    assert list(np.diff(cal.copyright_loss_quantiles) >= 0) == [True] * 10
    assert cal.n_images == tuple(int(n) for n in SIZES)
    assert len(cal.rounds) == 20 and cal.sources == tuple(str(r) for r in runs)
    assert {"run_dir", "round_id", "participating", "D_t", "fid", "contribution", "loss"} == set(
        cal.rounds[0]
    )
    report = env_calibration_report(cal)
    assert "R²" in report and "log D_t" in report


def test_fit_accepts_a_sweep_folder_and_single_run_dirs(tmp_path: Path) -> None:
    runs = synthetic_runs(tmp_path / "sweep")
    from_folder = fit_env_calibration([tmp_path / "sweep"], "digits")
    from_runs = fit_env_calibration(runs, "digits")
    assert from_folder.fid_coef == from_runs.fid_coef
    assert from_folder.sources == from_runs.sources


def test_calibration_round_trips_through_json(tmp_path: Path) -> None:
    cal = fit_env_calibration(synthetic_runs(tmp_path / "runs"), "lfw")
    path = cal.to_json(tmp_path / "out" / "env_calibration.json")
    again = EnvCalibration.from_json(path)
    assert again == cal
    assert isinstance(again.fid_coef, tuple) and isinstance(again.rounds, tuple)


def test_from_json_names_a_missing_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no environment calibration"):
        EnvCalibration.from_json(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not a readable JSON"):
        EnvCalibration.from_json(bad)
    cal = fit_env_calibration(synthetic_runs(tmp_path / "runs"), "mnist")
    record = json.loads(cal.to_json(tmp_path / "good.json").read_text())
    del record["fid_r2"]
    bad.write_text(json.dumps(record))
    with pytest.raises(DataError, match="missing keys \\['fid_r2'\\]"):
        EnvCalibration.from_json(bad)
    record = json.loads((tmp_path / "good.json").read_text())
    record["fid_coef"] = [1.0, 2.0]
    bad.write_text(json.dumps(record))
    with pytest.raises(DataError, match="fid_coef needs 3"):
        EnvCalibration.from_json(bad)


def test_too_few_rounds_with_quality_raise_naming_what_is_missing(tmp_path: Path) -> None:
    mask = np.ones(len(SIZES), bool)
    share = SIZES / SIZES.sum()
    loss = np.zeros(len(SIZES))
    for t in (1, 2, 3):
        write_round(tmp_path / "run", t, mask, share, loss, 100.0 + t)
    write_round(tmp_path / "run", 4, mask, share, loss, None)
    with pytest.raises(
        DataError, match="at least 4 rounds with quality.json.*found 3 of 4"
    ) as info:
        fit_env_calibration([tmp_path / "run"], "mnist")
    assert "round_004" in str(info.value)


def test_a_run_without_varied_data_sizes_cannot_fit_fid(tmp_path: Path) -> None:
    mask = np.ones(len(SIZES), bool)
    for t in (1, 2, 3, 4):  # every holder every round: log D_t is constant
        write_round(tmp_path / "run", t, mask, SIZES / SIZES.sum(), np.zeros(8), 50.0 / t)
    with pytest.raises(DataError, match="cannot separate data size from round"):
        fit_env_calibration([tmp_path / "run"], "mnist")


def test_no_rounds_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no rounds"):
        fit_env_calibration([tmp_path / "empty"], "mnist")
    with pytest.raises(DataError, match="does not exist"):
        fit_env_calibration([tmp_path / "absent"], "mnist")


def test_participation_design_spans_small_to_full_rounds() -> None:
    masks = np.concatenate([participation_design(8, 3, 0, c) for c in range(4)])
    counts = masks.sum(axis=1)
    assert counts.min() == 2 and counts.max() >= 7 and len(set(counts.tolist())) >= 5
    np.testing.assert_array_equal(
        participation_design(8, 3, 0, 1), participation_design(8, 3, 0, 1)
    )
    assert not np.array_equal(participation_design(8, 3, 0, 1), participation_design(8, 3, 0, 2))


def test_measure_rounds_runs_the_real_stages_on_digits_and_resumes(tmp_path: Path) -> None:
    """Tiny profile, ≈ 15 s: 1 campaign × 2 rounds (too few to fit), then a second campaign."""
    from offchain.config import Settings
    from offchain.rounds.config import MLConfig
    from offchain.rounds.measure import measure_rounds

    settings = Settings.for_profile("tiny")
    kwargs = {
        "ml": MLConfig.from_settings(settings, progress=False),
        "n_holders": settings.n_holders,
        "sizes": settings.holder_sizes,
        "n_rounds": 2,
    }
    out = tmp_path / "sweep"
    runs = measure_rounds("digits", out, n_campaigns=1, **kwargs)
    assert runs == [out / "campaign_0"]
    for t in (1, 2):
        paths = RoundPaths(runs[0], t)
        for artifact in (paths.manifest, paths.contributions, paths.copyright, paths.quality):
            assert artifact.exists(), artifact
        assert not paths.decision.exists()
    assert (out / "quality_reference").is_dir()
    with pytest.raises(DataError, match="found 2 of 2 rounds"):
        fit_env_calibration(runs, "digits")
    stamp = RoundPaths(runs[0], 1).quality.stat().st_mtime_ns

    runs = measure_rounds("digits", out, n_campaigns=2, **kwargs)  # campaign 0 is resumed
    assert RoundPaths(runs[0], 1).quality.stat().st_mtime_ns == stamp
    cal = fit_env_calibration(runs, "digits")
    assert cal.n_fid_obs == 4 and cal.n_images == (6, 8, 10, 12)
    assert all(r["fid"] > 0 for r in cal.rounds)
    with pytest.raises(DataError, match="measured dataset 'digits', not 'lfw'"):
        fit_env_calibration(runs, "lfw")
    with pytest.raises(ConfigError, match="another design"):
        measure_rounds("digits", out, n_campaigns=1, **{**kwargs, "n_rounds": 3})
