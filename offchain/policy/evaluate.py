"""The evaluation table: every method × dataset, mean and 95 % interval over seeds, and plots.

Methods (Shi et al., arXiv 2410.20180, the eight benchmarks and the hierarchy):

- the nine heuristic pairs upper {linear, random, greedy} × lower {equal ("Linear"), random,
  contribution};
- ``rl/equal``: RL upper level, equal split; ``linear/rl``: Linear upper level, RL lower level;
- ``rl/rl``: the full hierarchical policy.

For every dataset (an :class:`~offchain.policy.calibrate.EnvCalibration` fitted on measured
rounds) and seed s, the RL policies are trained with seed s (:func:`offchain.policy.rl.train_policy`)
and every method plays the same ``episodes`` campaigns (same prices, exposure and noise per
episode). A method's figure for seed s is its mean over those campaigns; the table gives the mean
over seeds and a 95 % Student-t interval.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from offchain.errors import ConfigError
from offchain.policy.calibrate import EnvCalibration
from offchain.policy.env import CampaignConfig, CampaignSimulator, EpisodeMetrics, RewardConfig
from offchain.policy.factory import make_policy
from offchain.policy.rl import PPOConfig, load_policy, train_policy

__all__ = ["BASELINES", "COLUMNS", "METHODS", "EvaluationConfig", "evaluate", "markdown_table"]

logger = logging.getLogger(__name__)

BASELINES = tuple(
    f"{upper}/{lower}"
    for upper in ("linear", "random", "greedy")
    for lower in ("equal", "random", "contribution")
)
"""The nine heuristic pairs."""

RL_METHODS = {"rl/equal": "upper", "linear/rl": "lower", "rl/rl": "full"}
"""RL methods and the part of a trained policy folder each uses."""

METHODS = (*BASELINES, *RL_METHODS)
"""Every method of the table, in row order."""

COLUMNS = {
    "fid_final": "FID ↓",
    "retained": "retained",
    "budget_spent": "budget spent",
    "utility_tokens": "utility (tokens)",
    "compensation_ratio": "compensation",
    "gini": "Gini",
    "spearman": "Spearman(pay, contrib.)",
    "episode_return": "return ↑",
}
"""Metric attribute of :class:`~offchain.policy.env.EpisodeMetrics` → column title."""


@dataclass(frozen=True)
class EvaluationConfig:
    """How the table is made."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """Seeds of RL training and of the random baselines (≥ 5 for the table)."""
    episodes: int = 50
    """Campaigns each method plays per seed."""

    def __post_init__(self) -> None:
        if not self.seeds or self.episodes < 1:
            raise ConfigError(f"needs ≥ 1 seed and ≥ 1 episode, got {self.seeds}, {self.episodes}")


def _policy(method: str, seed: int, policy_dir: Path):
    if method in RL_METHODS:
        return load_policy(policy_dir, RL_METHODS[method])
    return make_policy(method, seed=seed)


def evaluate(
    calibrations: dict[str, EnvCalibration],
    out_dir: Path,
    *,
    campaign: CampaignConfig | None = None,
    reward: RewardConfig | None = None,
    ppo: PPOConfig | None = None,
    config: EvaluationConfig | None = None,
    methods: Sequence[str] = METHODS,
    progress: bool = False,
    jobs: int = 1,
    on_policy: Callable[[str, int, Path], None] | None = None,
) -> list[dict]:
    """Train (or reuse) the RL policies and play every method; write the results.

    Outputs under ``out_dir``: ``<dataset>/seed<s>/`` (trained policies), ``episodes.csv``
    (one row per dataset × method × seed × episode), ``table.md`` (:func:`markdown_table`) and
    ``<dataset>_budgets.png`` / ``<dataset>_payments.png``.

    Policies are trained first, ``jobs`` at a time in separate processes (each uses one
    thread), then every method plays.

    Returns:
        one dict per dataset × method × seed: the episode means of :data:`COLUMNS` plus
        ``budgets`` (mean round budgets / B, length T) and ``payments`` (mean payment per
        holder / B, length N).
    """
    campaign, reward = campaign or CampaignConfig(), reward or RewardConfig()
    config = config or EvaluationConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    episode_rows: list[dict] = []
    budget = campaign.total_budget_wei
    if any(m in RL_METHODS for m in methods):
        _train_all(
            calibrations,
            out_dir,
            config.seeds,
            jobs,
            on_policy,
            campaign=campaign,
            reward=reward,
            ppo=ppo,
            progress=progress and jobs == 1,
        )
    for dataset, calibration in calibrations.items():
        sim = CampaignSimulator(calibration, campaign, reward)
        for seed in config.seeds:
            policy_dir = out_dir / dataset / f"seed{seed}"
            for method in methods:
                policy = _policy(method, seed, policy_dir)
                runs: list[EpisodeMetrics] = []
                for episode in range(config.episodes):
                    metrics = sim.run(policy, seed=1_000_003 * (seed + 1) + episode)
                    runs.append(metrics)
                    episode_rows.append(
                        {
                            "dataset": dataset,
                            "method": method,
                            "seed": seed,
                            "episode": episode,
                            **{k: getattr(metrics, k) for k in COLUMNS},
                        }
                    )
                row = {"dataset": dataset, "method": method, "seed": seed}
                for key in COLUMNS:
                    row[key] = float(np.nanmean([getattr(m, key) for m in runs]))
                row["budgets"] = (np.mean([m.budgets_wei for m in runs], axis=0) / budget).tolist()
                row["payments"] = (
                    np.mean([m.payments_wei for m in runs], axis=0) / budget
                ).tolist()
                rows.append(row)
    _write_csv(out_dir / "episodes.csv", episode_rows)
    (out_dir / "table.md").write_text(markdown_table(rows), encoding="utf-8")
    for dataset in calibrations:
        plot_dataset(rows, dataset, out_dir)
    return rows


def _train_all(calibrations, out_dir, seeds, jobs, on_policy, **kwargs) -> None:
    """Train (or find) the policy of every dataset × seed, ``jobs`` processes at a time."""
    todo = [(d, s, out_dir / d / f"seed{s}") for d in calibrations for s in seeds]
    if jobs <= 1:
        for dataset, seed, folder in todo:
            train_policy(calibrations[dataset], folder, seed=seed, **kwargs)
            if on_policy:
                on_policy(dataset, seed, folder)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {
            pool.submit(train_policy, calibrations[d], folder, seed=s, **kwargs): (d, s, folder)
            for d, s, folder in todo
        }
        for future in as_completed(futures):
            future.result()  # re-raises a worker's error
            if on_policy:
                on_policy(*futures[future])


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t interval (NaNs dropped; half-width NaN if n < 2)."""
    from scipy.stats import t

    x = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan")
    half = float(t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return float(x.mean()), half


def markdown_table(rows: Sequence[dict]) -> str:
    """One Markdown table per dataset: mean ± 95 % half-width over seeds, best return in bold."""
    out: list[str] = []
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    for dataset in datasets:
        mine = [r for r in rows if r["dataset"] == dataset]
        methods = list(dict.fromkeys(r["method"] for r in mine))
        n_seeds = len({r["seed"] for r in mine})
        out.append(f"### {dataset} ({n_seeds} seeds)\n")
        out.append("| method | " + " | ".join(COLUMNS.values()) + " |")
        out.append("|---|" + "---|" * len(COLUMNS))
        means = {
            m: interval([r["episode_return"] for r in mine if r["method"] == m])[0] for m in methods
        }
        best = max(means, key=lambda m: means[m])
        for method in methods:
            cells = []
            for key in COLUMNS:
                mean, half = interval([r[key] for r in mine if r["method"] == method])
                digits = 1 if key in ("fid_final", "utility_tokens") else 2
                text = f"{mean:.{digits}f}" if np.isfinite(mean) else "—"
                if np.isfinite(half):
                    text += f" ± {half:.{digits}f}"
                cells.append(text)
            name = f"**{method}**" if method == best else method
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def plot_dataset(rows: Sequence[dict], dataset: str, out_dir: Path) -> tuple[Path, Path]:
    """Budget per round and payment per holder (share of B, mean over seeds) per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r["dataset"] == dataset]
    methods = list(dict.fromkeys(r["method"] for r in mine))
    paths = []
    for key, xlabel, name in (
        ("budgets", "round", "budgets"),
        ("payments", "holder index", "payments"),
    ):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for method in methods:
            curve = np.mean([r[key] for r in mine if r["method"] == method], axis=0)
            x = np.arange(1, len(curve) + 1) if key == "budgets" else np.arange(len(curve))
            style = "-" if method.startswith("rl") or method.endswith("rl") else "--"
            ax.plot(
                x,
                curve,
                style,
                marker="o",
                markersize=3,
                label=method,
                linewidth=2.2 if method == "rl/rl" else 1.0,
            )
        ax.set_xticks(x)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("share of the budget B")
        ax.set_title(
            f"{dataset}: {'budget per round' if key == 'budgets' else 'payment per holder'}"
        )
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out_dir / f"{dataset}_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths[0], paths[1]
