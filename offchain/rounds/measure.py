"""The measurement sweep of the policy calibration: real rounds over varied participant sets.

:func:`measure_rounds` runs ``n_campaigns`` independent chains of ``n_rounds`` rounds of the
real off-chain stages, those of :data:`offchain.rounds.pipeline.MEASURED_STAGES` (prepare →
train → generate → attribute → copyright → quality; no policy, allocation or chain), where each
round's participants are a seeded random subset of the holders whose size ranges from 2 to all
(:func:`participation_design`: a measurement design, not a campaign, so a holder may sit out a
round and come back). :func:`offchain.policy.calibrate.fit_env_calibration` fits the policy
environment on the rounds it writes.

Command: ``python -m offchain policy-calibrate --dataset mnist --out runs/policy/mnist``
(docs/policy.md, section "Environment calibration").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from offchain.data.holders import Holder, write_dataset_manifest
from offchain.data.splits import dataset_holders
from offchain.errors import ConfigError, StageError
from offchain.layout import RoundPaths
from offchain.policy.calibrate import CAMPAIGN_FILE
from offchain.rounds import stages
from offchain.rounds.config import EXECUTION_FIELDS, MLConfig
from offchain.rounds.pipeline import MEASURED_STAGES, bind_stages
from offchain.utils import read_json, write_json

__all__ = ["measure_rounds", "participation_design"]

logger = logging.getLogger(__name__)


def participation_design(n_holders: int, n_rounds: int, seed: int, campaign: int) -> np.ndarray:
    """Participation masks bool (n_rounds, n_holders) of one campaign of the sweep.

    Subset sizes are stratified over [min(2, H), H]: round k of the campaign (in a seeded
    order) draws its size from the k-th of ``n_rounds`` equal slices, jittered uniformly, so
    every campaign spans small to full rounds and campaigns differ; the members are a seeded
    random subset of that size. Depends only on (seed, campaign, n_rounds, n_holders).
    """
    if n_holders < 1 or n_rounds < 1:
        raise ConfigError(f"need n_holders >= 1 and n_rounds >= 1, got {n_holders}, {n_rounds}")
    rng = np.random.default_rng([seed, campaign])
    low = min(2, n_holders)
    position = (np.arange(n_rounds) + rng.uniform(size=n_rounds)) / n_rounds  # in [0, 1)
    sizes = low + np.floor(position * (n_holders - low + 1)).astype(int)
    sizes = np.minimum(sizes, n_holders)[rng.permutation(n_rounds)]
    masks = np.zeros((n_rounds, n_holders), dtype=bool)
    for t, k in enumerate(sizes):
        masks[t, rng.choice(n_holders, size=int(k), replace=False)] = True
    return masks


def measure_rounds(
    dataset: str,
    out_dir: Path,
    n_campaigns: int = 4,
    n_rounds: int = 3,
    ml: MLConfig | None = None,
    seed: int = 0,
    n_holders: int = 8,
    sizes: Sequence[int] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Run the measurement sweep: the real off-chain stages over varied participant sets.

    Holders: :func:`offchain.data.splits.dataset_holders` ``(dataset, n_holders, sizes,
    seed)``, the same in every campaign. One reference classifier and FID reference
    (:func:`offchain.rounds.stages.prepare_quality_reference`) in ``out_dir/quality_reference``
    serves every campaign: it depends only on the held-out images (the same holders, so the
    same) and the classifier settings of ``ml``, and ``prepare_reference`` refuses a folder
    trained on other data. Campaign ``c`` lives in ``out_dir/campaign_<c>/`` (``holders.json``,
    ``campaign.json`` with its design, ``round_NNN/``); its rounds follow
    :func:`participation_design`, continue each other's checkpoints, and train with seed
    ``ml.seed + 1000·c`` so campaigns are independent. Per round: prepare, train, generate,
    attribute, assess_copyright, assess_quality. Each stage skips finished work, so a re-run
    resumes; a re-run with another design in the same folder is refused.

    Args:
        dataset: ``mnist``, ``digits`` or ``lfw``.
        out_dir: the sweep's folder.
        n_campaigns, n_rounds: campaigns C ≥ 1 of T ≥ 1 rounds.
        ml: the stages' settings; None: :class:`~offchain.rounds.config.MLConfig` defaults.
        seed: seed of the holders' split and of the design.
        n_holders, sizes: the holders (sizes None: the dataset's defaults).
        log: called with a line per stage run (e.g. ``console.print``); None: logging.

    Returns:
        The campaigns' run directories (pass them to :func:`fit_env_calibration`).

    Raises:
        ConfigError: bad counts, an unknown dataset, or a folder holding another design.
        StageError, DataError: as the stages.
    """
    if n_campaigns < 1 or n_rounds < 1:
        raise ConfigError(f"need n_campaigns >= 1 and n_rounds >= 1, got {n_campaigns}, {n_rounds}")
    ml = ml if ml is not None else MLConfig()
    say = log if log is not None else logger.info
    out_dir = Path(out_dir)
    holders = dataset_holders(dataset, n_holders=n_holders, sizes=sizes, seed=seed)
    started = time.perf_counter()
    reference = stages.prepare_quality_reference(out_dir, holders, dataset, ml)
    say(f"{dataset}: quality reference ready ({time.perf_counter() - started:.1f} s)")

    run_dirs = []
    for c in range(n_campaigns):
        run_dir = out_dir / f"campaign_{c}"
        masks = participation_design(len(holders), n_rounds, seed, c)
        ml_c = dataclasses.replace(ml, seed=ml.seed + 1000 * c, cache_dir=str(run_dir / "cache"))
        design = {
            "dataset": dataset,
            "seed": seed,
            "campaign": c,
            "n_rounds": n_rounds,
            "n_images": [h.n_images for h in holders],
            "participating": masks.tolist(),
            "ml": {k: v for k, v in dataclasses.asdict(ml_c).items()
                   if k not in EXECUTION_FIELDS},
        }
        _check_design(run_dir, design)
        write_dataset_manifest(holders, run_dir / "holders.json")
        write_json(run_dir / CAMPAIGN_FILE, design)
        for t in range(1, n_rounds + 1):
            paths = RoundPaths(run_dir, t)
            for name, step in _measure_steps(paths, holders, masks[t - 1], ml_c, reference):
                t0 = time.perf_counter()
                step()
                dt = time.perf_counter() - t0
                if dt > 0.05:
                    say(f"{dataset} campaign {c} round {t}: {name} {dt:.1f} s")
            recorded = [h["participating"] for h in read_json(paths.manifest)["holders"]]
            if recorded != masks[t - 1].tolist():
                raise StageError(f"{paths.manifest}: participants differ from the design")
        run_dirs.append(run_dir)
    say(f"{dataset}: {n_campaigns} × {n_rounds} rounds in {time.perf_counter() - started:.1f} s")
    return run_dirs


def _measure_steps(
    paths: RoundPaths, holders: Sequence[Holder], mask: np.ndarray, ml: MLConfig,
    reference: Any,
) -> list[tuple[str, Callable[[], object]]]:
    """(key, work) of a measured round's stages (:data:`~offchain.rounds.pipeline.
    MEASURED_STAGES`: the oracle's, through quality), in pipeline order.

    Raises:
        StageBindingError: the work bound here does not match the measured stages.
    """
    work: dict[str, Callable[[], object] | None] = {
        "prepare": lambda: stages.prepare(paths, holders, mask),
        "train": lambda: stages.train(paths, ml),
        "generate": lambda: stages.generate(paths, ml),
        "attribute": lambda: stages.attribute(paths, ml),
        "copyright": lambda: stages.assess_copyright(paths, ml),
        "quality": lambda: stages.assess_quality(paths, ml, reference),
    }
    return [(spec.key, run) for spec, run in bind_stages(MEASURED_STAGES, work)]


def _check_design(run_dir: Path, design: dict[str, Any]) -> None:
    path = run_dir / CAMPAIGN_FILE
    if not path.exists():
        if any(run_dir.glob("round_*")):
            raise ConfigError(f"{run_dir} holds rounds of an unknown design; use another --out")
        return
    stored = read_json(path)
    if isinstance(stored.get("ml"), dict):  # settings added since (backend, …) at their defaults
        defaults = {k: v for k, v in dataclasses.asdict(MLConfig()).items()
                    if k not in EXECUTION_FIELDS}
        stored["ml"] = {**defaults, **stored["ml"]}
    # compared as JSON holds them (tuple settings such as lora_target_modules become lists)
    if json.loads(json.dumps(stored)) != json.loads(json.dumps(design)):
        raise ConfigError(
            f"{run_dir} holds a sweep of another design (dataset, seed, rounds, holders or ML "
            "settings differ); use another --out or remove it"
        )
