"""Whole campaigns with tiny settings on a real anvil node: every holder is paid exactly, and
with binding caps every round stays within them."""

import io

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from offchain.allocation import parse_wei
from offchain.api.app import create_app
from offchain.config import Settings
from offchain.layout import RoundPaths
from offchain.oracle.campaign import run_campaign
from offchain.utils import read_json
from tests.json_safety import js_parse, json_artifacts, unsafe_for_javascript

WEI = 10**18
ROUND_CAP_WEI = 400 * WEI  # below B/T = 500 tokens
HOLDER_CAP_WEI = 101 * WEI  # ≈ the equal share of 400 among 4: binds for any unequal split


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    settings = Settings.for_profile("tiny", run_dir=run_dir)
    console = Console(file=io.StringIO(), width=160)
    result = run_campaign(settings, console=console, fresh=True)
    return settings, result, console.file.getvalue()


def test_every_holders_on_chain_balance_equals_its_allocations(campaign):
    settings, result, _ = campaign
    assert result.rounds == settings.n_rounds
    assert result.balances_wei == result.allocated_wei
    assert sum(result.allocated_wei) == settings.total_budget_wei  # linear upper spends all
    assert result.extras["unallocated_wei"] == 0


def test_each_round_allocation_sums_exactly_to_its_budget_and_every_claim_landed(campaign):
    settings, result, _ = campaign
    for round_id in range(1, result.rounds + 1):
        paths = RoundPaths(result.run_dir, round_id)
        allocation = read_json(paths.allocation)
        # wei are decimal strings in the artifacts (issue 13, item 12)
        assert all(isinstance(h["amount_wei"], str) for h in allocation["holders"])
        amounts = [parse_wei(h["amount_wei"]) for h in allocation["holders"]]
        assert sum(amounts) == parse_wei(allocation["budget_wei"])
        assert sum(amounts) == parse_wei(allocation["total_wei"])
        claims = read_json(paths.claims)["claims"]
        assert {c["index"] for c in claims} == {
            h["index"] for h in allocation["holders"] if parse_wei(h["amount_wei"]) > 0
        }
        assert all(c["ok"] and c["received_wei"] == c["amount_wei"] for c in claims)
        for name in ("manifest", "samples", "contributions", "copyright", "quality", "decision",
                     "tree", "signature", "submission", "finality"):
            assert getattr(paths, name).exists(), name
        contributions = read_json(paths.contributions)
        assert contributions["ensemble"] == settings.trak_ensemble == 2
        assert sum(contributions["normalized"]) == pytest.approx(1.0)
        assert len(list(paths.trak_dir.glob("member_*"))) == 2
        copyright_ = read_json(paths.copyright)
        assert all(0.0 <= x <= 1.0 for x in copyright_["loss"])
        assert paths.copyright_calibration.exists()
        quality = read_json(paths.quality)
        assert quality["fid"] > 0 and quality["n_samples"] == settings.quality_samples


def test_rounds_are_signed_k_of_n_with_provenance_and_posted_once(campaign):
    settings, result, _ = campaign
    deployment = read_json(result.run_dir / "deployment.json")
    assert deployment["threshold"] == settings.oracle_threshold == 2
    assert len(deployment["signers"]) == 3
    for round_id in range(1, result.rounds + 1):
        paths = RoundPaths(result.run_dir, round_id)
        signed = read_json(paths.signature)
        allocation = read_json(paths.allocation)
        assert signed["signers"] == sorted(signed["signers"], key=lambda a: int(a, 16))
        assert set(signed["signers"]) <= set(deployment["signers"])
        assert signed["allocation"]["merkle_root"] == allocation["merkle_root"]
        provenance = allocation["provenance"]
        assert {k: signed["allocation"][k] for k in provenance} == provenance
        assert all(len(v) == 66 and int(v, 16) != 0 for v in provenance.values())
        submission = read_json(paths.submission)
        assert submission["campaign_id"] == deployment["campaign_id"]
        assert "tx_hash" in submission and submission["finalizes_at"] > 0


def test_round_table_and_plot_are_produced(campaign):
    _, result, output = campaign
    assert "Round 1" in output and "copyright loss" in output and "Campaign summary" in output
    assert result.plot.exists() and result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for round_id in range(1, result.rounds + 1):  # each round's generations next to the works
        grid = RoundPaths(result.run_dir, round_id).generations_png
        assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Generations from" not in output  # ddpm: unconditional, no prompts
    assert not RoundPaths(result.run_dir, 1).prompts.exists()
    detail = TestClient(create_app(result.run_dir)).get("/rounds/1").json()
    assert {(h["licence"], h["attribution"]) for h in detail["holders"]} == {(None, None)}


def test_api_serves_each_holders_proofs(campaign):
    _, result, _ = campaign
    client = TestClient(create_app(result.run_dir))
    assert client.get("/health").json()["rounds"] == result.rounds
    rounds = client.get("/rounds").json()
    assert [r["status"] for r in rounds] == ["claimed"] * result.rounds
    address = read_json(RoundPaths(result.run_dir, 1).allocation)["holders"][0]["address"]
    body = client.get(f"/holders/{address.lower()}/claims").json()
    assert body["address"] == address and body["claims"][0]["proof"]
    assert client.get("/rounds/99").status_code == 404
    assert client.get("/holders/0x1234/claims").status_code == 422


def test_a_javascript_client_reads_every_artifact_and_response_exactly(campaign):
    """Issue 13, item 12: no integer ≥ 2**53 and no wei field that is not a decimal string in
    any JSON file the campaign wrote or any API response (``JSON.parse`` would round them)."""
    _, result, _ = campaign
    files = json_artifacts(result.run_dir)
    assert any(p.name == "signature.json" for p in files) and len(files) > 10
    problems = [
        f"{p.relative_to(result.run_dir)}: {msg}"
        for p, data in files.items()
        for msg in unsafe_for_javascript(data)
    ]
    assert problems == []
    client = TestClient(create_app(result.run_dir))
    urls = ["/health", "/rounds", "/campaigns", "/campaigns/1", "/campaigns/1/rounds"]
    for round_id in range(1, result.rounds + 1):
        urls += [f"/rounds/{round_id}", f"/rounds/{round_id}/signing-request"]
        allocation = read_json(RoundPaths(result.run_dir, round_id).allocation)
        urls += [f"/holders/{h['address']}/claims" for h in allocation["holders"]]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, (url, response.text)
        assert unsafe_for_javascript(js_parse(response.text)) == [], url
    detail = client.get("/rounds/1").json()  # item 14: the k-of-n signatures are served
    assert len(detail["signatures"]) >= detail["threshold"] == 2


def test_the_dataset_manifest_keeps_prices_exact_for_a_javascript_client(campaign):
    _, result, _ = campaign
    assert unsafe_for_javascript(read_json(result.run_dir / "holders.json")) == []


def test_every_stage_of_every_round_is_recorded_done_in_the_state_database(campaign):
    from offchain.rounds.pipeline import STAGE_KEYS
    from offchain.state import RoundStore, StageStatus, default_url, make_engine

    settings, result, _ = campaign
    store = RoundStore(make_engine(default_url(result.run_dir)))
    deployment = read_json(result.run_dir / "deployment.json")
    campaign_pk = store.ensure_campaign(deployment["chain_id"], deployment["pool"],
                                        deployment["campaign_id"], str(result.run_dir))
    for round_id in range(1, result.rounds + 1):
        round_pk = store.ensure_round(campaign_pk, round_id)
        assert store.resume_point(round_pk, STAGE_KEYS) is None
        assert store.round_status(round_pk).value == "finalized"
        assert store.live_submission(round_pk).tx_hash == read_json(
            RoundPaths(result.run_dir, round_id).submission)["tx_hash"]
        assert store.stage_run(round_pk, "train").status is StageStatus.DONE


def test_a_new_local_chain_refuses_a_database_of_the_old_one(campaign, tmp_path):
    from offchain.errors import ConfigError
    from offchain.state import default_url

    settings, result, _ = campaign
    again = Settings.for_profile("tiny", run_dir=tmp_path / "again",
                                 state_url=default_url(result.run_dir), quality_reference="none")
    with pytest.raises(ConfigError, match="already has rounds of campaign 1"):
        run_campaign(again, console=Console(file=io.StringIO()), fresh=True)


def test_rerunning_the_stages_skips_work_already_done(campaign):
    from offchain.rounds import stages
    from offchain.rounds.config import MLConfig

    _, result, _ = campaign
    paths = RoundPaths(result.run_dir, 1)
    before = {p: p.stat().st_mtime_ns for p in (paths.manifest, paths.samples, paths.allocation)}
    ml = MLConfig(n_samples=4, train_steps=8, proj_dim=32, trak_timesteps=2,
                  progress=False)
    stages.train(paths, ml)
    stages.generate(paths, ml)
    stages.attribute(paths, ml)
    stages.allocate(paths)
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_quality_reference_defaults_to_mnist_and_is_off_for_own_images_unless_asked(tmp_path):
    from offchain.oracle.run_folder import quality_reference_dataset

    assert quality_reference_dataset(Settings.for_profile("tiny")) == "mnist"
    assert quality_reference_dataset(Settings.for_profile("tiny", holders_dir=tmp_path)) is None
    assert (
        quality_reference_dataset(
            Settings.for_profile("tiny", holders_dir=tmp_path, quality_reference="digits")
        )
        == "digits"
    )
    assert quality_reference_dataset(Settings.for_profile("tiny", quality_reference="none")) is None


@pytest.fixture(scope="module")
def capped_campaign(tmp_path_factory):
    """The tiny campaign with a round cap below B/T and a holder cap near an equal share; each
    round's on-chain record is read while the chain is up."""
    from offchain.chain import ChainClient, compile_contracts
    from offchain.chain.pool import PoolClient

    run_dir = tmp_path_factory.mktemp("capped")
    settings = Settings.for_profile(
        "tiny", run_dir=run_dir, round_cap_wei=ROUND_CAP_WEI, holder_cap_wei=HOLDER_CAP_WEI
    )
    abi = compile_contracts()["CompensationPool"].abi
    on_chain = {}

    def record(paths):
        deployment = read_json(run_dir / "deployment.json")
        pool = PoolClient(ChainClient(deployment["rpc_url"]), deployment["pool"], abi)
        campaign_id = deployment["campaign_id"]
        on_chain[paths.round_id] = (
            pool.get_round(campaign_id, paths.round_id),
            pool.get_campaign(campaign_id),
        )

    console = Console(file=io.StringIO(), width=160)
    result = run_campaign(settings, console=console, fresh=True, on_round=record)
    return settings, result, on_chain


def test_capped_campaign_pays_every_round_within_the_on_chain_caps(capped_campaign):
    settings, result, on_chain = capped_campaign
    assert result.rounds == settings.n_rounds == 2
    assert sorted(on_chain) == [1, 2]
    for round_id in (1, 2):
        paths = RoundPaths(result.run_dir, round_id)
        allocation = read_json(paths.allocation)
        decision = read_json(paths.decision)
        amounts = [parse_wei(h["amount_wei"]) for h in allocation["holders"]]
        round_info, campaign = on_chain[round_id]
        assert (campaign.round_cap_wei, campaign.holder_cap_wei) == (ROUND_CAP_WEI, HOLDER_CAP_WEI)
        assert decision["caps"]["round_cap_wei"] == str(ROUND_CAP_WEI)
        assert decision["caps"]["holder_cap_wei"] == str(HOLDER_CAP_WEI)
        # accepted on chain with our root and total, final, and every leaf claimed
        assert "tx_hash" in read_json(paths.submission)
        assert round_info.merkle_root == allocation["merkle_root"]
        assert round_info.total_wei == sum(amounts) == parse_wei(allocation["budget_wei"]) > 0
        assert round_info.holder_cap_wei == HOLDER_CAP_WEI
        assert round_info.remaining_wei == 0
        assert sum(amounts) <= ROUND_CAP_WEI
        assert max(amounts) <= HOLDER_CAP_WEI
        n_payable = sum(w > 0 for w in decision["weights"])
        # the caps bind: the linear budget (500, then what remains) is cut to the caps
        assert sum(amounts) == min(ROUND_CAP_WEI, HOLDER_CAP_WEI * n_payable)
        assert HOLDER_CAP_WEI in amounts
        claims = read_json(paths.claims)["claims"]
        assert claims and all(c["ok"] and c["received_wei"] == c["amount_wei"] for c in claims)


def test_capped_campaign_leaves_the_unspent_budget_in_escrow(capped_campaign):
    settings, result, _ = capped_campaign
    assert result.balances_wei == result.allocated_wei
    spent = sum(result.allocated_wei)
    assert spent < settings.total_budget_wei
    assert result.extras["unallocated_wei"] == settings.total_budget_wei - spent
    deployment = read_json(result.run_dir / "deployment.json")
    assert (deployment["round_cap_wei"], deployment["holder_cap_wei"]) == (
        str(ROUND_CAP_WEI),
        str(HOLDER_CAP_WEI),
    )
