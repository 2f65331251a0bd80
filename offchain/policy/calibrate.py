"""Calibrate the payment-campaign environment from measured rounds of the real pipeline.

The gymnasium environment of the budget policy (:mod:`offchain.policy.env`) needs three
dynamics that the project can measure instead of invent: how model quality (FID) responds to
the data a round trains on, how TRAK contribution shares relate to a holder's image count, and
how large the copyright losses are. The rounds are measured by the sweep of
:mod:`offchain.rounds.measure` (real off-chain stages over seeded random participant sets) or by
any oracle run; this module reads them from disk (:class:`~offchain.layout.RoundPaths`) and

* **fits** (:func:`fit_env_calibration`) on the rounds of any run directories the oracle or
  the sweep wrote:

  - quality: ordinary least squares of ``log FID_t = a + b·log D_t + c·log t`` with
    ``D_t`` the images trained in round ``t`` (the participants') and ``t`` the 1-based round
    index (each round continues the previous round's checkpoint, so ``t`` stands for the
    training so far);
  - contribution: among a round's participants with normalized contribution > 0,
    ``log share_i = κ·log n_i − log Z_t + σ·z_i`` (``Z_t`` normalises the round's shares);
    κ by OLS of log share on log n_i after demeaning both within each round (round fixed
    effects absorb ``log Z_t``), σ the residual standard deviation (degrees of freedom:
    observations − rounds − 1); the share of participants at exactly 0 is reported apart;
  - copyright: the 11 quantiles (0, 0.1, …, 1) and the mean of the participants' measured
    per-holder loss (``copyright.json`` ``loss``);

* writes the result as :class:`EnvCalibration` JSON (``env_calibration.json``), which the
  environment reads, and prints it (:func:`env_calibration_report`).

Command: ``python -m offchain policy-calibrate --dataset mnist --out runs/policy/mnist``
(docs/policy.md, section "Environment calibration").
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from offchain.errors import ConfigError, DataError
from offchain.layout import RoundPaths
from offchain.utils import read_json, write_json

__all__ = [
    "CALIBRATION_FILE",
    "MIN_FID_ROUNDS",
    "QUANTILE_LEVELS",
    "EnvCalibration",
    "env_calibration_report",
    "fit_env_calibration",
    "fit_fid",
    "fit_fid_monotone",
]

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "env_calibration.json"
"""Name of the calibration under the command's ``--out`` folder."""

MIN_FID_ROUNDS = 4
"""Rounds with ``quality.json`` the FID fit needs (3 coefficients + 1 degree of freedom)."""

MIN_CONTRIBUTION_OBS = 3
"""Positive contributions (in rounds with ≥ 2 of them) the κ fit needs."""

QUANTILE_LEVELS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(11))
"""Levels of :attr:`EnvCalibration.copyright_loss_quantiles`: 0, 0.1, …, 1."""

CAMPAIGN_FILE = "campaign.json"
"""The sweep's record of a campaign's design, next to its rounds
(:func:`offchain.rounds.measure.measure_rounds` writes it, the fit checks its dataset)."""


# ---------------------------------------------------------------------------------------------
# The calibration record
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvCalibration:
    """The environment's measured dynamics (see the module docstring for the models)."""

    dataset: str
    """Dataset of the holders' images (``mnist``, ``digits``, ``lfw``)."""
    n_images: tuple[int, ...]
    """Images per holder, of the holders of the (first) measured run."""
    fid_coef: tuple[float, float, float]
    """(a, b, c) of ``log FID_t = a + b·log D_t + c·log t`` (OLS)."""
    fid_residual_std: float
    """Residual standard deviation of the FID fit, log space (degrees of freedom n − 3)."""
    fid_r2: float
    """R² of the FID fit (log space)."""
    n_fid_obs: int
    """Rounds in the FID fit."""
    contribution_exponent: float
    """κ: log share_i = κ·log n_i − log Z_t + σ·z_i among positive contributions."""
    contribution_noise: float
    """σ: residual standard deviation of the within-round fit."""
    contribution_r2: float
    """Within-round R² of the κ fit."""
    contribution_zero_fraction: float
    """Share of participants whose normalized contribution is exactly 0."""
    n_contribution_obs: int
    """Positive contributions in the κ fit (rounds with at least two of them)."""
    copyright_loss_quantiles: tuple[float, ...]
    """Quantiles at :data:`QUANTILE_LEVELS` of the participants' per-holder copyright loss."""
    copyright_loss_mean: float
    """Mean of the participants' per-holder copyright loss."""
    n_copyright_obs: int
    """Participant-rounds behind the copyright figures."""
    rounds: tuple[dict, ...]
    """One audit record per measured round: ``run_dir``, ``round_id``, ``participating``,
    ``D_t``, ``fid`` (or None), ``contribution`` (normalized, per holder, or None), ``loss``
    (per holder, or None)."""
    sources: tuple[str, ...]
    """Run directories the rounds come from."""

    def to_json(self, path: Path) -> Path:
        """Write the calibration as JSON, atomically; returns ``path``."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in record.items():
            if isinstance(value, tuple):
                record[name] = list(value)
        return write_json(path, record)

    @classmethod
    def from_json(cls, path: Path) -> EnvCalibration:
        """Read a calibration written by :meth:`to_json`.

        Raises:
            ConfigError: no file at ``path``.
            DataError: not JSON, or keys missing, unknown or of the wrong type or length.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"no environment calibration at {path}; make one with "
                "`python -m offchain policy-calibrate --dataset <name> --out <dir>`"
            )
        try:
            record = read_json(path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{path}: not a readable JSON calibration ({exc})") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}: expected a JSON object, got {type(record).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in record]
        unknown = sorted(set(record) - set(names))
        if missing or unknown:
            raise DataError(f"{path}: missing keys {missing}, unknown keys {unknown}")
        try:
            values: dict[str, Any] = {
                "dataset": _typed(record["dataset"], str),
                "n_images": tuple(int(_typed(x, int)) for x in record["n_images"]),
                "fid_coef": tuple(float(x) for x in record["fid_coef"]),
                "copyright_loss_quantiles": tuple(
                    float(x) for x in record["copyright_loss_quantiles"]
                ),
                "rounds": tuple(_typed(r, dict) for r in record["rounds"]),
                "sources": tuple(_typed(s, str) for s in record["sources"]),
            }
            for name in (
                "fid_residual_std",
                "fid_r2",
                "contribution_exponent",
                "contribution_noise",
                "contribution_r2",
                "contribution_zero_fraction",
                "copyright_loss_mean",
            ):
                values[name] = float(record[name])
            for name in ("n_fid_obs", "n_contribution_obs", "n_copyright_obs"):
                values[name] = int(_typed(record[name], int))
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: malformed calibration ({exc})") from exc
        if len(values["fid_coef"]) != 3:
            raise DataError(f"{path}: fid_coef needs 3 numbers, got {len(values['fid_coef'])}")
        if len(values["copyright_loss_quantiles"]) != len(QUANTILE_LEVELS):
            raise DataError(
                f"{path}: copyright_loss_quantiles needs {len(QUANTILE_LEVELS)} numbers, got "
                f"{len(values['copyright_loss_quantiles'])}"
            )
        if not values["n_images"] or min(values["n_images"]) < 1:
            raise DataError(f"{path}: n_images must list at least one positive count")
        return cls(**values)


def _typed(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Reading measured rounds
# ---------------------------------------------------------------------------------------------


def _round_dirs(run_dir: Path) -> list[RoundPaths]:
    """The rounds (with a manifest) of one run directory, by id."""
    found = []
    for child in Path(run_dir).glob("round_*"):
        suffix = child.name.removeprefix("round_")
        if child.is_dir() and suffix.isascii() and suffix.isdigit():
            paths = RoundPaths(Path(run_dir), int(suffix))
            if paths.manifest.exists():
                found.append(paths)
    return sorted(found, key=lambda p: p.round_id)


def expand_run_dirs(dirs: Sequence[Path]) -> list[Path]:
    """Run directories in ``dirs``: each one itself when it holds ``round_*`` folders, else its
    sub-folders that do (a sweep's ``--out``, whose campaigns are ``campaign_<c>/``).

    Raises:
        DataError: a directory is missing or holds no rounds at either level.
    """
    runs: list[Path] = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise DataError(f"run directory {d} does not exist")
        if _round_dirs(d):
            runs.append(d)
            continue
        children = sorted(c for c in d.iterdir() if c.is_dir() and _round_dirs(c))
        if not children:
            raise DataError(f"{d} holds no rounds (no round_NNN/manifest.json in it or below)")
        runs.extend(children)
    return runs


def _read_round(paths: RoundPaths) -> dict[str, Any]:
    manifest = read_json(paths.manifest)
    holders = manifest["holders"]
    record: dict[str, Any] = {
        "run_dir": str(paths.run_dir),
        "round_id": int(paths.round_id),
        "participating": [bool(h["participating"]) for h in holders],
        "n_images": [int(h["n_images"]) for h in holders],
        "D_t": int(manifest["n_train"]),
        "fid": None,
        "contribution": None,
        "loss": None,
    }
    if paths.quality.exists():
        record["fid"] = float(read_json(paths.quality)["fid"])
    if paths.contributions.exists():
        record["contribution"] = [float(x) for x in read_json(paths.contributions)["normalized"]]
    if paths.copyright.exists():
        record["loss"] = [float(x) for x in read_json(paths.copyright)["loss"]]
    return record


# ---------------------------------------------------------------------------------------------
# The fits
# ---------------------------------------------------------------------------------------------


def fit_fid(d_t: Sequence[float], t: Sequence[float], fid: Sequence[float]) -> dict[str, Any]:
    """OLS of ``log fid = a + b·log d_t + c·log t``.

    Returns:
        ``coef`` (a, b, c), ``residual_std`` (log space, n − 3 degrees of freedom), ``r2``, ``n``.

    Raises:
        DataError: fewer than :data:`MIN_FID_ROUNDS` observations, or D_t and t do not vary
            independently (a singular design).
    """
    d_t, t, fid = (np.asarray(v, dtype=np.float64) for v in (d_t, t, fid))
    n = len(fid)
    if n < MIN_FID_ROUNDS:
        raise DataError(f"the FID fit needs at least {MIN_FID_ROUNDS} rounds, got {n}")
    x = np.column_stack([np.ones(n), np.log(d_t), np.log(t)])
    if np.linalg.matrix_rank(x) < 3:
        raise DataError(
            f"the FID fit cannot separate data size from round: {len(set(d_t.tolist()))} "
            f"distinct D_t and {len(set(t.tolist()))} distinct t over {n} rounds (log D_t, "
            "log t and the intercept are collinear); measure rounds with varied participants"
        )
    y = np.log(fid)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    ssr = float(resid @ resid)
    sst = float(((y - y.mean()) ** 2).sum())
    return {
        "coef": tuple(float(c) for c in coef),
        "residual_std": math.sqrt(ssr / (n - 3)),
        "r2": 1.0 - ssr / sst if sst > 0 else 1.0,
        "n": n,
    }


def fit_fid_monotone(
    d_t: Sequence[float], t: Sequence[float], fid: Sequence[float]
) -> tuple[float, float, float]:
    """Least squares of ``log fid = a + b·log d_t + c·log t`` subject to ``b ≤ 0, c ≤ 0``.

    The prior that more data and more training never make the expected FID worse: where the
    unconstrained slopes (:func:`fit_fid`) have the wrong sign, which on 9 noisy rounds they
    can (LFW: b = +0.69 ± 0.91), the constrained fit sets them to 0 and refits the rest. Exact
    for two bound constraints: the best feasible of the four active sets.

    Returns:
        (a, b, c).

    Raises:
        DataError: as :func:`fit_fid`.
    """
    fit_fid(d_t, t, fid)  # validates the design
    d_t, t, fid = (np.asarray(v, dtype=np.float64) for v in (d_t, t, fid))
    y = np.log(fid)
    columns = {"b": np.log(d_t), "c": np.log(t)}
    best: tuple[float, tuple[float, float, float]] | None = None
    for free in (("b", "c"), ("b",), ("c",), ()):
        x = np.column_stack([np.ones(len(y))] + [columns[name] for name in free])
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        slopes = dict(zip(free, coef[1:], strict=True))
        if any(value > 0 for value in slopes.values()):
            continue
        resid = y - x @ coef
        candidate = (float(coef[0]), float(slopes.get("b", 0.0)), float(slopes.get("c", 0.0)))
        if best is None or float(resid @ resid) < best[0]:
            best = (float(resid @ resid), candidate)
    return best[1]  # the intercept-only model is always feasible, so best is set


def fit_contribution(
    groups: Sequence[tuple[Sequence[float], Sequence[float]]],
) -> dict[str, Any]:
    """Within-round OLS of log share on log n over ``groups`` of (n_i, share_i > 0).

    Groups with fewer than two members carry no within-round information and are dropped.

    Returns:
        ``kappa``, ``sigma`` (residual std, N − G − 1 degrees of freedom; the plain residual
        RMS when that is ≤ 0), ``r2`` (within), ``n`` (observations kept).

    Raises:
        DataError: fewer than :data:`MIN_CONTRIBUTION_OBS` usable observations, or no variation
            of n within any round.
    """
    xs, ys = [], []
    for n_i, share in groups:
        n_i, share = np.asarray(n_i, np.float64), np.asarray(share, np.float64)
        if len(n_i) < 2:
            continue
        x, y = np.log(n_i), np.log(share)
        xs.append(x - x.mean())
        ys.append(y - y.mean())
    n_obs = int(sum(len(x) for x in xs))
    if n_obs < MIN_CONTRIBUTION_OBS:
        raise DataError(
            f"the contribution fit needs at least {MIN_CONTRIBUTION_OBS} positive contributions "
            f"in rounds with two or more of them, got {n_obs}"
        )
    x, y = np.concatenate(xs), np.concatenate(ys)
    sxx = float(x @ x)
    if sxx == 0.0:
        raise DataError("the contribution fit needs holders of different sizes within a round")
    kappa = float(x @ y) / sxx
    resid = y - kappa * x
    ssr = float(resid @ resid)
    sst = float(y @ y)
    dof = n_obs - len(xs) - 1
    return {
        "kappa": kappa,
        "sigma": math.sqrt(ssr / dof) if dof > 0 else math.sqrt(ssr / n_obs),
        "r2": 1.0 - ssr / sst if sst > 0 else 1.0,
        "n": n_obs,
    }


def fit_env_calibration(run_dirs: Sequence[Path], dataset: str) -> EnvCalibration:
    """Fit the environment's dynamics on the measured rounds of ``run_dirs``.

    Each entry is a run directory (``round_NNN/`` inside: a demo run such as ``runs/demo``, or
    one campaign of the sweep) or a folder of such (a sweep's ``--out``). Read per round:
    ``manifest.json`` (participants, images per holder, ``n_train`` = D_t),
    ``contributions.json`` ``normalized``, ``copyright.json`` ``loss`` and ``quality.json``
    ``fid``; a round lacking one of the last three only drops out of that fit.

    Raises:
        DataError: no rounds; fewer than :data:`MIN_FID_ROUNDS` rounds with a positive FID
            (naming the rounds without ``quality.json``); too few positive contributions; no
            participant's copyright loss; a singular FID design; a sweep of another dataset.
    """
    runs = expand_run_dirs(run_dirs)
    records: list[dict[str, Any]] = []
    for run in runs:
        campaign = run / CAMPAIGN_FILE
        if campaign.exists():
            measured = read_json(campaign).get("dataset")
            if measured is not None and measured != dataset:
                raise DataError(f"{run} measured dataset {measured!r}, not {dataset!r}")
        records.extend(_read_round(p) for p in _round_dirs(run))
    if not records:
        raise DataError(f"no measured rounds in {[str(r) for r in runs]}")
    n_images = tuple(records[0]["n_images"])
    if any(tuple(r["n_images"]) != n_images for r in records):
        logger.warning(
            "the runs' holders differ in images per holder; n_images is the first run's %s",
            n_images,
        )

    with_fid = [r for r in records if r["fid"] is not None and r["fid"] > 0]
    if len(with_fid) < MIN_FID_ROUNDS:
        without = [f"{r['run_dir']}/round_{r['round_id']:03d}" for r in records if r["fid"] is None]
        raise DataError(
            f"the FID fit needs at least {MIN_FID_ROUNDS} rounds with quality.json (FID > 0); "
            f"found {len(with_fid)} of {len(records)} rounds in {[str(r) for r in runs]}"
            + (f"; without quality.json: {without}" if without else "")
            + "; measure more rounds (policy-calibrate) or pass more run directories"
        )
    fid = fit_fid(
        [r["D_t"] for r in with_fid],
        [r["round_id"] for r in with_fid],
        [r["fid"] for r in with_fid],
    )

    groups, n_participants, n_zero = [], 0, 0
    for r in records:
        if r["contribution"] is None:
            continue
        mask = np.asarray(r["participating"], bool)
        share = np.asarray(r["contribution"], np.float64)[mask]
        sizes = np.asarray(r["n_images"], np.float64)[mask]
        n_participants += int(mask.sum())
        n_zero += int((share <= 0).sum())
        groups.append((sizes[share > 0], share[share > 0]))
    if not groups:
        raise DataError(f"no round in {[str(r) for r in runs]} has contributions.json")
    contribution = fit_contribution(groups)

    losses = [
        loss
        for r in records
        if r["loss"] is not None
        for loss, p in zip(r["loss"], r["participating"], strict=True)
        if p
    ]
    if not losses:
        raise DataError(f"no round in {[str(r) for r in runs]} has copyright.json")
    quantiles = np.quantile(np.asarray(losses, np.float64), QUANTILE_LEVELS)

    audit = tuple({k: v for k, v in r.items() if k != "n_images"} for r in records)
    return EnvCalibration(
        dataset=dataset,
        n_images=n_images,
        fid_coef=fid["coef"],
        fid_residual_std=fid["residual_std"],
        fid_r2=fid["r2"],
        n_fid_obs=fid["n"],
        contribution_exponent=contribution["kappa"],
        contribution_noise=contribution["sigma"],
        contribution_r2=contribution["r2"],
        contribution_zero_fraction=n_zero / n_participants if n_participants else 0.0,
        n_contribution_obs=contribution["n"],
        copyright_loss_quantiles=tuple(float(q) for q in quantiles),
        copyright_loss_mean=float(np.mean(losses)),
        n_copyright_obs=len(losses),
        rounds=audit,
        sources=tuple(str(r) for r in runs),
    )


def env_calibration_report(cal: EnvCalibration) -> str:
    """A plain-text summary of the fit (what the command prints)."""
    a, b, c = cal.fid_coef
    fids = [r["fid"] for r in cal.rounds if r["fid"] is not None]
    d_t = [r["D_t"] for r in cal.rounds if r["fid"] is not None]
    q = cal.copyright_loss_quantiles
    lines = [
        f"Environment calibration: {cal.dataset}, {len(cal.rounds)} rounds from "
        f"{len(cal.sources)} run(s); holders' images {list(cal.n_images)}",
        f"  quality   log FID = {a:.3f} {b:+.3f}·log D_t {c:+.3f}·log t   "
        f"R² {cal.fid_r2:.3f}, residual std {cal.fid_residual_std:.3f} (log), "
        f"n {cal.n_fid_obs}",
        f"            measured FID {min(fids):.1f} … {max(fids):.1f} over D_t "
        f"{min(d_t)} … {max(d_t)}",
        f"  contrib.  log share = {cal.contribution_exponent:.3f}·log n_i − log Z "
        f"+ {cal.contribution_noise:.3f}·z   within-round R² {cal.contribution_r2:.3f}, "
        f"n {cal.n_contribution_obs}; zero share {cal.contribution_zero_fraction:.3f}",
        f"  copyright loss mean {cal.copyright_loss_mean:.4g}, n {cal.n_copyright_obs}; "
        "quantiles "
        + " ".join(f"{lvl:g}:{v:.3g}" for lvl, v in zip(QUANTILE_LEVELS, q, strict=True)),
    ]
    return "\n".join(lines)
