"""Payouts within the contract's caps by construction: the split, the policies, the stages, anvil."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offchain.allocation import (
    PayoutCaps,
    PayoutTree,
    capped_budget,
    capped_split,
    largest_remainder,
    parse_wei,
)
from offchain.errors import AllocationError, ConfigError
from offchain.layout import RoundPaths
from offchain.policy import CampaignState, HolderFeatures, PolicyDecision, apply_caps, make_policy
from offchain.rounds import stages
from offchain.utils import read_json, write_json, write_npy

pytest_plugins = ["tests.chain_fixtures"]

WEI = 10**18

# -- PayoutCaps, capped_budget ---------------------------------------------------------------


def test_payout_caps_validate_ints_and_holder_cap_at_most_round_cap():
    assert PayoutCaps(10, 10, 0).to_json() == {  # decimal strings (issue 13, item 12)
        "round_cap_wei": "10",
        "holder_cap_wei": "10",
        "escrow_wei": "0",
    }
    assert PayoutCaps.from_json(PayoutCaps(10, 3, 7).to_json()) == PayoutCaps(10, 3, 7)
    assert PayoutCaps(np.int64(5), 5, 5).round_cap_wei == 5
    with pytest.raises(AllocationError, match="exceeds round_cap_wei"):
        PayoutCaps(10, 11, 100)
    with pytest.raises(AllocationError, match=">= 0"):
        PayoutCaps(10, 5, -1)
    with pytest.raises(AllocationError, match="int"):
        PayoutCaps(10.0, 5, 1)  # type: ignore[arg-type]
    with pytest.raises(AllocationError, match="int"):
        PayoutCaps(True, 1, 1)  # type: ignore[arg-type]


def test_capped_budget_is_the_tightest_of_budget_round_cap_escrow_and_holder_caps():
    caps = PayoutCaps(round_cap_wei=400, holder_cap_wei=100, escrow_wei=1000)
    assert capped_budget(500, 5, caps) == 400  # round cap
    assert capped_budget(500, 3, caps) == 300  # 3 payees × holder cap
    assert capped_budget(250, 5, caps) == 250  # nothing binds
    assert capped_budget(500, 5, PayoutCaps(400, 100, 120)) == 120  # escrow
    assert capped_budget(500, 0, caps) == 0  # nobody to pay
    with pytest.raises(AllocationError):
        capped_budget(-1, 5, caps)


# -- capped_split ----------------------------------------------------------------------------


def test_capped_split_water_fills_the_excess_onto_the_uncapped_holders():
    assert capped_split(10, [8, 1, 1], 4) == [4, 3, 3]
    assert capped_split(100, [0.9, 0.05, 0.05, 0.0], 40) == [40, 30, 30, 0]
    # two rounds of capping: the first cap pushes the second holder over too
    assert capped_split(90, [60, 25, 10, 5], 30) == [30, 30, 20, 10]
    assert capped_split(90, [1, 1, 1], 30) == [30, 30, 30]  # exactly feasible


def test_capped_split_equals_largest_remainder_when_no_cap_binds():
    weights = [0.5, 0.3, 0.2]
    assert capped_split(10**18, weights, 10**18) == largest_remainder(10**18, weights)
    assert capped_split(0, [0.0, 0.0], 0) == [0, 0]


def test_capped_split_refuses_a_budget_no_split_can_fit_naming_the_numbers():
    with pytest.raises(AllocationError, match=r"cannot split 91 wei among 3 holders .* 30 wei"):
        capped_split(91, [1, 1, 1, 0], 30)
    with pytest.raises(AllocationError, match="negative"):
        capped_split(10, [1, -1], 10)
    with pytest.raises(AllocationError, match="int"):
        capped_split(10, [1, 1], 5.0)  # type: ignore[arg-type]


_weights = st.lists(
    st.one_of(
        st.just(0.0),
        st.floats(min_value=1e-9, max_value=1e6, allow_nan=False, allow_infinity=False),
    ),
    min_size=1,
    max_size=12,
).filter(lambda ws: any(w > 0 for w in ws))


@settings(max_examples=300, deadline=None)
@given(
    weights=_weights,
    budget=st.integers(min_value=0, max_value=10**24),
    slack=st.one_of(st.just(0.0), st.floats(0.0, 0.3), st.floats(0.0, 2.0)),  # cap binds often
)
def test_capped_split_properties(weights, budget, slack):
    n_pos = sum(w > 0 for w in weights)
    cap = -(-budget // n_pos) + int(slack * budget)  # always feasible
    amounts = capped_split(budget, weights, cap)
    assert all(isinstance(a, int) and 0 <= a <= cap for a in amounts)
    assert sum(amounts) == budget
    assert all(a == 0 for a, w in zip(amounts, weights, strict=True) if w == 0)
    plain = largest_remainder(budget, weights)
    if max(plain) <= cap:
        assert amounts == plain
    # order-preserving up to rounding: a larger weight never gets less (beyond 1 wei)
    for i, wi in enumerate(weights):
        for j, wj in enumerate(weights):
            if wi >= wj:
                assert amounts[i] >= amounts[j] - 1
    # water-filling: a holder below the cap is never paid less than its plain share
    for a, p in zip(amounts, plain, strict=True):
        if a < cap:
            assert a >= p - 1


@settings(max_examples=100, deadline=None)
@given(weights=_weights, cap=st.integers(min_value=0, max_value=10**6), extra=st.integers(1, 10))
def test_capped_split_rejects_every_infeasible_budget(weights, cap, extra):
    n_pos = sum(w > 0 for w in weights)
    with pytest.raises(AllocationError, match="cannot split"):
        capped_split(cap * n_pos + extra, weights, cap)


# -- policies --------------------------------------------------------------------------------

B = 1500 * WEI
POLICIES = [
    f"{u}/{lo}"
    for u in ("linear", "greedy", "random")
    for lo in ("equal", "random", "contribution", "weighted")
]


def _features(contribution, loss=None, participating=None):
    n = len(contribution)
    return HolderFeatures(
        contribution=np.asarray(contribution, dtype=np.float64),
        copyright_loss=np.zeros(n) if loss is None else np.asarray(loss, dtype=np.float64),
        n_images=np.full(n, 10),
        participating=np.ones(n, bool) if participating is None else np.asarray(participating),
    )


def _state(round_id=1, remaining=B, n_rounds=3, caps=None, n=4):
    return CampaignState(round_id, n_rounds, B, remaining, n, n, caps=caps)


def test_campaign_state_takes_optional_caps():
    assert _state().caps is None
    assert _state(caps=PayoutCaps(1, 1, 1)).caps == PayoutCaps(1, 1, 1)
    with pytest.raises(ConfigError, match="PayoutCaps"):
        _state(caps={"round_cap_wei": 1})


def test_hierarchical_policy_clips_its_budget_to_the_caps():
    features = _features([0.97, 0.01, 0.01, 0.01])
    policy = make_policy("linear/contribution")
    assert policy.decide(_state(), features).budget_wei == B // 3
    caps = PayoutCaps(round_cap_wei=300 * WEI, holder_cap_wei=200 * WEI, escrow_wei=B)
    assert policy.decide(_state(caps=caps), features).budget_wei == 300 * WEI
    caps = PayoutCaps(round_cap_wei=600 * WEI, holder_cap_wei=100 * WEI, escrow_wei=B)
    assert policy.decide(_state(caps=caps), features).budget_wei == 400 * WEI  # 4 × holder cap
    caps = PayoutCaps(round_cap_wei=600 * WEI, holder_cap_wei=600 * WEI, escrow_wei=123)
    assert policy.decide(_state(caps=caps), features).budget_wei == 123
    # only two payees: contribution 0 for the others
    two = _features([0.5, 0.5, 0.0, 0.0])
    caps = PayoutCaps(round_cap_wei=600 * WEI, holder_cap_wei=100 * WEI, escrow_wei=B)
    assert policy.decide(_state(caps=caps), two).budget_wei == 200 * WEI


def test_all_zero_weights_fall_back_to_equal_weights_over_participants():
    class Zero:
        name = "zero"

        def holder_weights(self, state, features):
            return np.zeros(len(features.participating))

    from offchain.policy import HierarchicalPolicy

    policy = HierarchicalPolicy(upper=make_policy("linear/equal").upper, lower=Zero())
    features = _features([0, 0, 0, 0], participating=[True, False, True, True])
    decision = policy.decide(_state(caps=PayoutCaps(B, 10 * WEI, B)), features)
    assert decision.weights.tolist() == [1.0, 0.0, 1.0, 1.0]
    assert decision.budget_wei == 30 * WEI


def test_apply_caps_leaves_a_decision_alone_without_caps():
    decision = PolicyDecision(budget_wei=B, weights=np.array([1.0, 0.0]))
    assert apply_caps(decision, _state(remaining=B)) is decision
    capped = apply_caps(decision, _state(caps=PayoutCaps(B, 7, B)))
    assert capped.budget_wei == 7 and capped.weights is decision.weights


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(POLICIES),
    seed=st.integers(0, 3),
    round_id=st.integers(1, 3),
    remaining=st.integers(0, B),
    contribution=st.lists(st.floats(0, 1), min_size=4, max_size=4),
    loss=st.lists(st.floats(0, 1), min_size=4, max_size=4),
    participating=st.lists(st.booleans(), min_size=4, max_size=4).filter(any),
    round_cap=st.integers(1, B),
    holder_frac=st.floats(0.0, 1.0),
    escrow=st.integers(0, 2 * B),
)
def test_every_baseline_policy_pays_within_the_caps(
    name,
    seed,
    round_id,
    remaining,
    contribution,
    loss,
    participating,
    round_cap,
    holder_frac,
    escrow,
):
    caps = PayoutCaps(round_cap, max(1, int(holder_frac * round_cap)), escrow)
    state = _state(round_id, remaining, caps=caps)
    features = _features(contribution, loss, participating)
    decision = make_policy(name, seed=seed).decide(state, features)
    assert 0 <= decision.budget_wei <= min(remaining, round_cap, escrow)
    amounts = capped_split(decision.budget_wei, decision.weights, caps.holder_cap_wei)
    assert sum(amounts) == decision.budget_wei
    assert all(0 <= a <= caps.holder_cap_wei for a in amounts)
    assert all(a == 0 for a, p in zip(amounts, participating, strict=True) if not p)


# -- stages.decide / stages.allocate on synthetic artifacts ----------------------------------

ADDRESSES = [f"0x{i:040x}" for i in range(1, 5)]


def _synthetic_round(run_dir, round_id, contribution):
    """The artifacts decide and allocate read, without any ML."""
    paths = RoundPaths(run_dir, round_id)
    paths.dir.mkdir(parents=True)
    holders = [
        {"index": i, "name": f"h{i}", "address": a, "n_images": 10, "participating": True}
        for i, a in enumerate(ADDRESSES)
    ]
    write_json(
        paths.manifest,
        {"round_id": round_id, "n_holders": 4, "holders": holders, "dataset_root": "d5" * 32},
    )
    write_json(paths.contributions, {"normalized": list(contribution)})
    write_json(paths.copyright, {"loss": [0.0] * 4})
    write_npy(paths.trak_dir / "scores.npy", np.zeros((2, 4), dtype=np.float32))
    (paths.checkpoint / "unet").mkdir(parents=True)
    (paths.checkpoint / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"w")
    return paths


def test_stages_clip_the_round_and_split_under_the_holder_cap(tmp_path):
    policy = make_policy("linear/contribution")
    total = 1000 * WEI
    caps = PayoutCaps(round_cap_wei=300 * WEI, holder_cap_wei=100 * WEI, escrow_wei=10 * total)
    for round_id in (1, 2):
        paths = _synthetic_round(tmp_path, round_id, [0.97, 0.01, 0.01, 0.01])
        stages.decide(paths, policy, 2, total, caps=caps)
        stages.allocate(paths)
        decision = read_json(paths.decision)
        # the escrow the policy saw is what the budget has left, not the larger chain escrow
        remaining = total - 300 * WEI * (round_id - 1)
        assert decision["caps"] == {**caps.to_json(), "escrow_wei": str(remaining)}
        assert decision["budget_wei"] == str(300 * WEI)  # B/T = 500, then 700, capped to 300
        allocation = read_json(paths.allocation)
        amounts = [parse_wei(h["amount_wei"]) for h in allocation["holders"]]
        assert allocation["holder_cap_wei"] == str(100 * WEI)
        assert amounts[0] == 100 * WEI
        assert sum(amounts) == parse_wei(allocation["total_wei"]) == 300 * WEI
        assert max(amounts) <= 100 * WEI
        tree = PayoutTree.from_json(read_json(paths.tree))
        assert max(tree.entry(i)[2] for i in range(4)) == 100 * WEI


def test_stages_clip_any_policy_and_honour_a_tighter_chain_escrow(tmp_path):
    class Spendthrift:  # a BudgetPolicy that ignores the caps
        name = "spendthrift"

        def decide(self, state, features):
            return PolicyDecision(state.remaining_budget_wei, np.array([1.0, 0.0, 0.0, 0.0]))

    paths = _synthetic_round(tmp_path, 1, [0.25] * 4)
    caps = PayoutCaps(round_cap_wei=500 * WEI, holder_cap_wei=200 * WEI, escrow_wei=150 * WEI)
    stages.decide(paths, Spendthrift(), 2, 1000 * WEI, caps=caps)
    decision = read_json(paths.decision)
    assert decision["policy_budget_wei"] == str(1000 * WEI)
    assert decision["budget_wei"] == str(150 * WEI)  # escrow, below 1 payee × 200
    stages.allocate(paths)
    assert [h["amount_wei"] for h in read_json(paths.allocation)["holders"]] == [
        str(150 * WEI),
        "0",
        "0",
        "0",
    ]


def test_allocate_reads_decisions_written_before_caps_were_recorded(tmp_path):
    paths = _synthetic_round(tmp_path, 1, [0.97, 0.01, 0.01, 0.01])
    weights = [0.97, 0.01, 0.01, 0.01]
    write_json(
        paths.decision,
        {
            "round_id": 1,
            "policy": "linear/contribution",
            "budget_wei": 500 * WEI,
            "weights": weights,
        },
    )
    stages.allocate(paths)
    allocation = read_json(paths.allocation)
    assert allocation["holder_cap_wei"] is None
    assert [parse_wei(h["amount_wei"]) for h in allocation["holders"]] == largest_remainder(
        500 * WEI, weights
    )


def test_allocate_refuses_a_decision_above_what_the_holder_cap_allows(tmp_path):
    paths = _synthetic_round(tmp_path, 1, [1.0, 0.0, 0.0, 0.0])
    write_json(
        paths.decision,
        {
            "round_id": 1,
            "policy": "hand-edited",
            "budget_wei": 101,
            "weights": [1.0, 0.0, 0.0, 0.0],
            "caps": PayoutCaps(1000, 100, 1000).to_json(),
        },
    )
    with pytest.raises(AllocationError, match="cannot split 101 wei among 1 holders"):
        stages.allocate(paths)


# -- real anvil: what capped_split makes, the contract pays ----------------------------------


def test_capped_rounds_are_accepted_and_every_leaf_is_claimable_on_chain(deploy_pool, roles):
    d = deploy_pool()
    c = d.campaign(num_rounds=2, round_cap_wei=300 * WEI, holder_cap_wei=100 * WEI)
    c.fund(roles.sponsor_a, 500 * WEI)
    addresses = roles.holder_addresses
    weights = [0.9, 0.06, 0.02, 0.01, 0.01]  # the plain split would pay holder 0 270 tokens
    assert largest_remainder(300 * WEI, weights)[0] > 100 * WEI
    spent = 0
    for round_id, expected_total in ((1, 300 * WEI), (2, 200 * WEI)):
        info = c.pool.get_campaign(c.campaign_id)
        caps = PayoutCaps(info.round_cap_wei, info.holder_cap_wei, info.unallocated_wei)
        budget = capped_budget(500 * WEI - spent, len(weights), caps)  # round 2: the escrow
        assert budget == expected_total
        amounts = capped_split(budget, weights, caps.holder_cap_wei)
        tree = PayoutTree.build(list(zip(range(5), addresses, amounts, strict=True)))
        c.post(round_id, tree)
        spent += budget
        c.wait_challenge_window()
        for i, account in enumerate(addresses):
            before = c.token.balance_of(account)
            c.pool.claim(
                roles.relayer, c.campaign_id, round_id, i, account, amounts[i], tree.proof(i)
            )
            after = c.token.balance_of(account)
            assert after - before == amounts[i] <= 100 * WEI
    assert c.pool.unallocated(c.campaign_id) == 0


# -- settings --------------------------------------------------------------------------------


def test_settings_caps_default_to_the_budget_and_come_from_the_environment(monkeypatch):
    from offchain.config import Settings

    tiny = Settings.for_profile("tiny")
    assert tiny.campaign_round_cap_wei == tiny.campaign_holder_cap_wei == tiny.total_budget_wei
    monkeypatch.setenv("CCOMP_ROUND_CAP_WEI", str(300 * WEI))
    monkeypatch.setenv("CCOMP_HOLDER_CAP_WEI", str(100 * WEI))
    env = Settings()
    assert (env.campaign_round_cap_wei, env.campaign_holder_cap_wei) == (300 * WEI, 100 * WEI)
    monkeypatch.delenv("CCOMP_HOLDER_CAP_WEI")
    assert Settings().campaign_holder_cap_wei == 300 * WEI  # unset: the round cap
    with pytest.raises(ConfigError, match="exceeds the round cap"):
        Settings(holder_cap_wei=301 * WEI)
    monkeypatch.delenv("CCOMP_ROUND_CAP_WEI")
    with pytest.raises(ConfigError, match="exceeds the round cap"):
        Settings.for_profile("tiny", holder_cap_wei=tiny.total_budget_wei + 1)
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(round_cap_wei=0)


def test_a_zero_budget_before_the_last_round_pays_one_wei_so_later_rounds_can_post(tmp_path):
    class Skip:  # pays nothing this round
        name = "skip"

        def decide(self, state, features):
            return PolicyDecision(0, np.array([0.1, 0.2, 0.3, 0.4]))

    first = _synthetic_round(tmp_path, 1, [0.25] * 4)
    stages.decide(first, Skip(), 2, 1000 * WEI)
    assert read_json(first.decision)["budget_wei"] == "1"  # the contract refuses a zero total
    stages.allocate(first)
    assert [h["amount_wei"] for h in read_json(first.allocation)["holders"]] == ["0", "0", "0", "1"]
    last = _synthetic_round(tmp_path, 2, [0.25] * 4)
    stages.decide(last, Skip(), 2, 1000 * WEI)
    assert read_json(last.decision)["budget_wei"] == "0"  # nothing follows the last round
