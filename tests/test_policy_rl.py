"""The RL policy: training, saving, loading by the oracle, caps, and the evaluation command."""

import json

import numpy as np
import pytest

from offchain.allocation import PayoutCaps
from offchain.errors import ConfigError
from offchain.layout import RoundPaths
from offchain.policy import make_policy
from offchain.policy.env import CampaignConfig, CampaignSimulator, RewardConfig
from offchain.policy.evaluate import EvaluationConfig, evaluate, interval
from offchain.policy.rl import PPOConfig, load_policy, train_policy
from offchain.rounds import stages
from offchain.utils import read_json
from tests.test_caps import WEI, _synthetic_round
from tests.test_policy_env import calibration

TINY_PPO = PPOConfig(timesteps=400, n_steps=200, batch_size=100, n_epochs=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A barely trained policy for 2-round campaigns (the interface, not its quality)."""
    folder = tmp_path_factory.mktemp("policy")
    return train_policy(
        calibration(), folder, campaign=CampaignConfig(n_rounds=2), ppo=TINY_PPO, seed=0
    )


def test_training_writes_both_levels_logs_and_settings(trained):
    for name in ("upper.zip", "lower.zip", "upper_equal.zip", "lower_pace.zip", "policy.json"):
        assert (trained / name).exists()
    meta = read_json(trained / "policy.json")
    assert meta["n_rounds"] == 2 and meta["seed"] == 0 and meta["ppo"]["timesteps"] == 400
    assert set(meta["seconds"]) == {
        "lower",
        "upper_equal",
        "upper",
        "lower_1",
        "upper_1",
        "lower_2",
        "upper_2",
    }
    assert (trained / "logs" / "upper" / "progress.csv").exists()
    assert list((trained / "logs" / "upper").glob("events.out.tfevents.*"))


def test_training_is_skipped_when_the_policy_exists(trained):
    before = (trained / "upper.zip").stat().st_mtime_ns
    train_policy(calibration(), trained, campaign=CampaignConfig(n_rounds=2), ppo=TINY_PPO)
    assert (trained / "upper.zip").stat().st_mtime_ns == before


def test_the_oracle_uses_the_trained_policy_through_make_policy(trained, tmp_path):
    policy = make_policy(f"rl:{trained}")
    assert policy.name == "rl/rl"
    paths = _synthetic_round(tmp_path, 1, [0.4, 0.3, 0.2, 0.1])
    caps = PayoutCaps(round_cap_wei=300 * WEI, holder_cap_wei=90 * WEI, escrow_wei=1000 * WEI)
    stages.decide(paths, policy, 2, 1000 * WEI, caps=caps)
    stages.allocate(paths)
    decision = read_json(paths.decision)
    amounts = [int(h["amount_wei"]) for h in read_json(paths.allocation)["holders"]]
    assert decision["policy"] == "rl/rl"
    assert sum(amounts) == int(decision["budget_wei"]) <= 300 * WEI
    assert max(amounts) <= 90 * WEI


def test_a_campaign_on_anvil_runs_on_the_trained_policy_within_tight_caps(trained, tmp_path):
    """The oracle's real rounds (tiny ML, real chain) with the RL policy deciding."""
    import io

    from rich.console import Console

    from offchain.config import Settings
    from offchain.oracle.campaign import run_campaign

    settings = Settings.for_profile(
        "tiny",
        run_dir=tmp_path / "run",
        policy=f"rl:{trained}",
        round_cap_wei=300 * WEI,
        holder_cap_wei=90 * WEI,
    )
    result = run_campaign(settings, console=Console(file=io.StringIO()), fresh=True)
    assert result.balances_wei == result.allocated_wei  # every leaf claimed on chain
    for round_id in range(1, result.rounds + 1):
        paths = RoundPaths(result.run_dir, round_id)
        decision, allocation = read_json(paths.decision), read_json(paths.allocation)
        amounts = [int(h["amount_wei"]) for h in allocation["holders"]]
        assert decision["policy"] == "rl/rl"
        assert sum(amounts) == int(decision["budget_wei"]) <= 300 * WEI
        assert max(amounts) <= 90 * WEI
    assert result.extras["unallocated_wei"] == settings.total_budget_wei - sum(result.allocated_wei)


def test_a_policy_trained_for_other_campaign_lengths_is_refused(trained):
    sim = CampaignSimulator(calibration(), CampaignConfig(n_rounds=3))
    with pytest.raises(ConfigError, match="2-round"):
        sim.run(load_policy(trained), seed=0)


def test_missing_or_incomplete_policy_folders_are_clear_errors(tmp_path, trained):
    with pytest.raises(ConfigError, match="no trained policy"):
        make_policy(f"rl:{tmp_path}")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "policy.json").write_text((trained / "policy.json").read_text())
    with pytest.raises(ConfigError, match="upper.zip is missing"):
        load_policy(broken)
    with pytest.raises(ConfigError, match="unknown policy part"):
        load_policy(trained, "middle")


def test_the_settings_accept_a_trained_policy(trained):
    from offchain.config import Settings

    assert Settings.for_profile("tiny", policy=f"rl:{trained}").policy == f"rl:{trained}"


def test_evaluation_writes_the_table_csv_and_plots(tmp_path):
    rows = evaluate(
        {"toy": calibration()},
        tmp_path,
        campaign=CampaignConfig(n_rounds=2),
        ppo=TINY_PPO,
        config=EvaluationConfig(seeds=(0, 1), episodes=2),
        jobs=2,  # the two policies train in two processes
        methods=("linear/equal", "greedy/contribution", "rl/equal", "linear/rl", "rl/rl"),
    )
    assert len(rows) == 2 * 5
    table = (tmp_path / "table.md").read_text()
    for method in ("linear/equal", "greedy/contribution", "rl/equal", "linear/rl", "rl/rl"):
        assert f"| {method} |" in table or f"| **{method}** |" in table
    assert "± " in table  # intervals over the two seeds
    lines = (tmp_path / "episodes.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 2 * 5 * 2
    assert (tmp_path / "toy_budgets.png").stat().st_size > 0
    assert (tmp_path / "toy_payments.png").stat().st_size > 0
    for row in rows:
        assert sum(row["budgets"]) <= 1.0 + 1e-9


def test_interval_is_a_student_t_half_width():
    mean, half = interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / np.sqrt(3), rel=1e-3)
    assert np.isnan(interval([1.0])[1])
    assert interval([float("nan"), 1.0, 3.0])[0] == 2.0


def test_rewards_are_recorded_with_the_policy(tmp_path):
    reward = RewardConfig(quality=0.0, budget=2.0)
    folder = train_policy(
        calibration(),
        tmp_path / "p",
        campaign=CampaignConfig(n_rounds=2),
        reward=reward,
        ppo=TINY_PPO,
    )
    assert json.loads((folder / "policy.json").read_text())["reward"]["budget"] == 2.0
