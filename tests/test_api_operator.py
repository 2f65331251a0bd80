"""Campaign status views, co-signing over the API and the operator endpoints (bearer token,
background ``run-round`` jobs), in-process and against a real ``python -m offchain serve``."""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from offchain.allocation import PayoutTree, RoundAllocation
from offchain.api.app import create_app
from offchain.api.operator import OperatorConfig, check_api_token
from offchain.config import Settings
from offchain.errors import ConfigError
from offchain.layout import RoundPaths
from offchain.oracle.chain_stages import AwaitingSignatures, request_signatures, sign
from offchain.oracle.run_folder import open_store
from offchain.oracle.signing import recover_round_signer, sign_round
from offchain.utils import read_json, write_json
from tests.oracle_procs import served, tiny_campaign

CHAIN_ID = 31337
POOL = "0x" + "5f" * 20
KEYS = ["0x" + f"{i:02x}" * 32 for i in (0x11, 0x22, 0x33)]
SIGNERS = [Account.from_key(k).address for k in KEYS]
STRANGER = "0x" + "44" * 32
PROVENANCE = {
    "checkpoint_hash": "0x" + "c1" * 32,
    "dataset_root": "0x" + "d5" * 32,
    "attribution_hash": "0x" + "a7" * 32,
}
TOKEN = "Qm7vX2pL9sK4tR8wB3nF6hJ1cD5gZ0yE"  # 32 characters, 30 distinct


def _write_round(run_dir: Path, round_id: int) -> RoundPaths:
    """The artifacts the allocate stage leaves (allocation.json, tree.json) plus what
    ``/rounds/{id}`` reads (decision.json, manifest.json)."""
    paths = RoundPaths(run_dir, round_id)
    paths.dir.mkdir(parents=True, exist_ok=True)
    holders = [(i, Account.from_key("0x" + f"{i + 0x60:02x}" * 32).address) for i in range(3)]
    amounts = [5 * 10**18, 3 * 10**18, 0]
    tree = PayoutTree.build([(i, a, w) for (i, a), w in zip(holders, amounts, strict=True)])
    write_json(paths.tree, tree.to_json())
    write_json(
        paths.allocation,
        {
            "round_id": round_id,
            "budget_wei": sum(amounts),
            "total_wei": sum(amounts),
            "merkle_root": tree.root,
            "provenance": PROVENANCE,
            "holders": [
                {"index": i, "name": f"h{i}", "address": a, "participating": True, "amount_wei": w}
                for (i, a), w in zip(holders, amounts, strict=True)
            ],
        },
    )
    write_json(paths.decision, {"policy": "linear/weighted"})
    write_json(paths.manifest, {"dataset_root": PROVENANCE["dataset_root"]})
    return paths


def _run_dir(tmp_path: Path, *, deployment: bool = True) -> Path:
    run_dir = tmp_path / "run"
    _write_round(run_dir, 1)
    if deployment:
        write_json(
            run_dir / "deployment.json",
            {
                "rpc_url": "http://127.0.0.1:1",
                "chain_id": CHAIN_ID,
                "token": "0x" + "70" * 20,
                "pool": POOL,
                "test_token": True,
                "campaign_id": 1,
                "signers": SIGNERS,
                "threshold": 2,
                "total_budget_wei": 10**21,
                "round_cap_wei": 10**21,
                "holder_cap_wei": 10**21,
                "challenge_window_s": 3600,
            },
        )
    return run_dir


def _store(run_dir: Path):
    store = open_store(Settings.for_profile("tiny", run_dir=run_dir))
    return store, store.ensure_round(store.ensure_campaign(CHAIN_ID, POOL, 1, str(run_dir)), 1)


# ------------------------------------------------------------------ tokens and auth


@pytest.mark.parametrize(
    "token",
    [
        "",
        "short-but-random-Zq8kP2m",  # < 32 characters
        "changeme" + "Zq8kP2mW4xR7tY1uI3oP5aS6dF9gH0jK",
        "secret" + "Zq8kP2mW4xR7tY1uI3oP5aS6dF9gH0jK",
        "token-Zq8kP2mW4xR7tY1uI3oP5aS6dF9gH0jK",
        "password" + "Zq8kP2mW4xR7tY1uI3oP5aS6dF9gH0jK",
        "a" * 48,
        "x" * 40,
        "abababababababababababababababababab",
        "<your token>" + "Zq8kP2mW4xR7tY1uI3oP5aS6dF9gH0jK",
    ],
)
def test_weak_or_placeholder_tokens_are_refused_at_start_up(tmp_path, token):
    with pytest.raises(ConfigError) as info:
        create_app(tmp_path, operator=OperatorConfig(token=SecretStr(token)))
    if token:
        assert token not in str(info.value)


def test_a_real_token_is_accepted_and_never_shown():
    token = secrets.token_urlsafe(32)
    check_api_token(token)
    check_api_token(TOKEN)
    config = OperatorConfig(token=SecretStr(token))
    assert token not in repr(config) and token not in str(config)


def test_serve_exits_1_with_the_reason_for_a_placeholder_token(tmp_path):
    from offchain.cli.main import app

    result = CliRunner().invoke(
        app,
        ["serve", "--run-dir", str(tmp_path)],
        env={"CCOMP_API_TOKEN": "changeme-changeme-changeme-changeme"},
    )
    assert result.exit_code == 1
    assert "placeholder" in result.output
    assert "changeme-changeme" not in result.output


def test_operator_routes_answer_503_without_a_token_and_401_without_the_right_one(tmp_path):
    run_dir = _run_dir(tmp_path)
    off = TestClient(create_app(run_dir))
    assert off.post("/operator/rounds/run").status_code == 503
    assert "disabled" in off.post("/operator/rounds/1/sign").json()["detail"]
    assert off.get("/operator/jobs/abc").status_code == 503

    on = TestClient(create_app(run_dir, operator=OperatorConfig(token=SecretStr(TOKEN))))
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        for method, url in (
            ("POST", "/operator/rounds/run"),
            ("POST", "/operator/rounds/1/sign"),
            ("POST", "/operator/rounds/1/submit"),
            ("GET", "/operator/jobs/abc"),
        ):
            response = on.request(method, url, headers=headers)
            assert response.status_code == 401, (headers, url, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
    ok = on.get("/operator/jobs/abc", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 404


# ------------------------------------------------------------------ status views


def test_campaign_views_read_artifacts_without_creating_the_database(tmp_path):
    run_dir = _run_dir(tmp_path)
    client = TestClient(create_app(run_dir))
    campaigns = client.get("/campaigns").json()
    assert [c["campaign_id"] for c in campaigns] == [1]
    assert campaigns[0]["signers"] == SIGNERS and campaigns[0]["threshold"] == 2
    assert campaigns[0]["total_budget_wei"] == str(10**21) and campaigns[0]["rounds"] == 1
    rounds = client.get("/campaigns/1/rounds").json()
    allocation = read_json(RoundPaths(run_dir, 1).allocation)
    assert rounds == [
        {
            "round_id": 1,
            "status": "pending",
            "status_source": "artifacts",
            "stages": dict.fromkeys(rounds[0]["stages"]),
            "merkle_root": allocation["merkle_root"],
            "budget_wei": str(8 * 10**18),
            "tx_hash": None,
        }
    ]
    write_json(RoundPaths(run_dir, 1).submission, {"tx_hash": "0x" + "ee" * 32})
    detail = client.get("/campaigns/1").json()
    assert detail["round_states"][0]["status"] == "challengeable"
    assert detail["round_states"][0]["tx_hash"] == "0x" + "ee" * 32
    one = client.get("/rounds/1").json()
    assert one["provenance"] == PROVENANCE and one["round_status"] is None
    assert client.get("/campaigns/2").status_code == 404
    assert client.get("/campaigns/2/rounds").status_code == 404
    assert not (run_dir / "state.db").exists(), "a GET created the state database"
    assert (
        TestClient(create_app(_run_dir(tmp_path / "b", deployment=False))).get("/campaigns").json()
        == []
    )


def test_campaign_views_show_the_database_status_and_stages(tmp_path):
    run_dir = _run_dir(tmp_path)
    store, round_pk = _store(run_dir)
    store.begin_stage(round_pk, "prepare")
    store.finish_stage(round_pk, "prepare")
    store.begin_stage(round_pk, "train")
    store.set_round_status(round_pk, "finalized")
    other = store.ensure_campaign(CHAIN_ID, POOL, 7, str(run_dir))
    store.ensure_round(other, 1)
    client = TestClient(create_app(run_dir))
    rounds = client.get("/campaigns/1/rounds").json()
    assert rounds[0]["status"] == "finalized" and rounds[0]["status_source"] == "database"
    assert rounds[0]["stages"]["prepare"] == "done" and rounds[0]["stages"]["train"] == "started"
    assert rounds[0]["stages"]["sign"] is None
    assert client.get("/rounds/1").json()["round_status"] == "finalized"
    assert [c["campaign_id"] for c in client.get("/campaigns").json()] == [1, 7]
    seven = client.get("/campaigns/7").json()
    assert seven["signers"] == [] and seven["round_states"][0]["status"] == "pending"
    assert seven["round_states"][0]["merkle_root"] is None  # the run folder is campaign 1's


# ------------------------------------------------------------------ co-signing


def _request(run_dir: Path, round_id: int = 1) -> tuple[RoundPaths, dict]:
    paths = RoundPaths(run_dir, round_id)
    request_signatures(paths, CHAIN_ID, POOL, 1, 1, deadline=2**40)
    return paths, read_json(paths.signing_request)


def _cosign(key: str, request: dict, **changes) -> str:
    allocation = RoundAllocation.from_json({**request["allocation"], **changes})
    return sign_round(key, request["chain_id"], request["verifying_contract"], allocation)


def test_a_cosignature_over_the_api_completes_the_nodes_sign_step(tmp_path):
    run_dir = _run_dir(tmp_path)
    client = TestClient(create_app(run_dir))
    assert client.get("/rounds/1/signing-request").status_code == 404
    paths, request = _request(run_dir)
    served = client.get("/rounds/1/signing-request").json()
    assert served == request and served["allocation"]["merkle_root"].startswith("0x")

    with pytest.raises(AwaitingSignatures):  # 1 local key of threshold 2
        sign(paths, [KEYS[0]], SIGNERS, 2, cosignatures={})

    response = client.post("/rounds/1/signatures", json={"signature": _cosign(KEYS[1], served)})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["signer"] == SIGNERS[1] and body["stored"] is True
    assert (body["collected"], body["threshold"], body["digest"]) == (1, 2, request["digest"])
    again = client.post("/rounds/1/signatures", json={"signature": _cosign(KEYS[1], served)})
    assert again.status_code == 200 and again.json()["stored"] is False

    store, round_pk = _store(run_dir)
    cosignatures = store.signatures(round_pk, request["digest"])
    assert list(cosignatures) == [SIGNERS[1].lower()]
    sign(
        paths,
        [KEYS[0]],
        SIGNERS,
        2,
        cosignatures=cosignatures,
        on_signature=lambda s, sig: store.add_signature(round_pk, s, request["digest"], sig),
    )
    signed = read_json(paths.signature)
    assert signed["signers"] == sorted(SIGNERS[:2], key=lambda a: int(a, 16))
    allocation = RoundAllocation.from_json(signed["allocation"])
    assert [
        recover_round_signer(s, CHAIN_ID, POOL, allocation) for s in signed["signatures"]
    ] == signed["signers"]
    assert store.signatures(round_pk, request["digest"]).keys() == {a.lower() for a in SIGNERS[:2]}
    metrics = client.get("/metrics").text
    assert 'route="/rounds/{round_id}/signatures",status="201"' in metrics


def test_cosignature_errors(tmp_path):
    run_dir = _run_dir(tmp_path)
    client = TestClient(create_app(run_dir))
    sig = _cosign(
        KEYS[2],
        {
            "chain_id": CHAIN_ID,
            "verifying_contract": POOL,
            "allocation": RoundAllocation(
                campaign_id=1,
                round_id=1,
                merkle_root="0x" + "00" * 32,
                total_wei=1,
                signer_set_version=1,
                deadline=1,
                **PROVENANCE,
            ).to_json(),
        },
    )
    # no signing request yet / unknown round
    assert client.post("/rounds/1/signatures", json={"signature": sig}).status_code == 404
    _, request = _request(run_dir)
    assert client.post("/rounds/9/signatures", json={"signature": sig}).status_code == 404
    assert client.post("/rounds/0/signatures", json={"signature": sig}).status_code == 404
    # malformed
    for body in (
        {"signature": "0x1234"},
        {},
        {"signature": sig, "extra": 1},
        {"signature": "0x" + "00" * 65},
        {"signature": 5},
    ):
        assert client.post("/rounds/1/signatures", json=body).status_code == 422, body
    assert (
        client.post(
            "/rounds/1/signatures",
            content=b"not json",
            headers={"content-type": "application/json"},
        ).status_code
        == 422
    )
    # a stranger, and a signer's signature over another allocation
    stranger = client.post("/rounds/1/signatures", json={"signature": _cosign(STRANGER, request)})
    assert stranger.status_code == 403
    other = _cosign(KEYS[2], request, total_wei=str(int(request["allocation"]["total_wei"]) + 1))
    assert client.post("/rounds/1/signatures", json={"signature": other}).status_code == 403
    assert not (run_dir / "state.db").exists()  # nothing valid was posted
    # a signer's different signature of the same digest
    store, round_pk = _store(run_dir)
    store.add_signature(round_pk, SIGNERS[2], request["digest"], "0x" + "ab" * 65)
    conflict = client.post("/rounds/1/signatures", json={"signature": _cosign(KEYS[2], request)})
    assert conflict.status_code == 409 and "another signature" in conflict.json()["detail"]


# ------------------------------------------------------------------ jobs


def _fake_command(seconds: float, code: int) -> tuple[str, ...]:
    script = (
        "import sys, time; print('run-round', ' '.join(sys.argv[1:]), flush=True); "
        f"time.sleep({seconds}); print('error: boom', flush=True); sys.exit({code})"
    )
    return (sys.executable, "-c", script)


def _wait(client, job_id: str, headers: dict, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/operator/jobs/{job_id}", headers=headers).json()
        if job["state"] != "running" or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_jobs_one_per_round_with_state_exit_code_and_output(tmp_path):
    run_dir = _run_dir(tmp_path)
    config = OperatorConfig(
        token=SecretStr(TOKEN),
        config_file=tmp_path / "node.env",
        deployment_file=tmp_path / "d.json",
        dev=True,
        command=_fake_command(1.5, 3),
    )
    client = TestClient(create_app(run_dir, operator=config))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    started = client.post("/operator/rounds/2/sign", headers=auth)
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["state"] == "running" and job["exit_code"] is None and job["action"] == "sign"
    assert job["args"] == [
        "--run-dir",
        str(run_dir.resolve()),
        "--json",
        "--round",
        "2",
        "--until",
        "sign",
        "--config",
        str(tmp_path / "node.env"),
        "--deployment",
        str(tmp_path / "d.json"),
        "--dev",
    ]
    assert client.post("/operator/rounds/2/submit", headers=auth).status_code == 409
    assert client.post("/operator/rounds/run", headers=auth, json={}).status_code == 409
    other = client.post("/operator/rounds/run", headers=auth, json={"round_id": 3})
    assert other.status_code == 202 and other.json()["args"][3:5] == ["--round", "3"]
    assert client.post("/operator/rounds/0/submit", headers=auth).status_code == 422
    done = _wait(client, job["job_id"], auth)
    assert (done["state"], done["exit_code"]) == ("failed", 3)
    assert "--until sign" in done["output_tail"] and "error: boom" in done["output_tail"]
    _wait(client, other.json()["job_id"], auth)
    ok = OperatorConfig(token=SecretStr(TOKEN), command=_fake_command(0, 0))
    client = TestClient(create_app(run_dir, operator=ok))
    job = client.post("/operator/rounds/run", headers=auth).json()
    assert job["args"] == ["--run-dir", str(run_dir.resolve()), "--json"]
    assert _wait(client, job["job_id"], auth)["state"] == "succeeded"
    metrics = client.get("/metrics").text
    assert 'route="/operator/jobs/{job_id}"' in metrics


# ------------------------------------------------------------------ a real server


def _wait_job(base: str, job_id: str, auth: dict[str, str], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = httpx.get(f"{base}/operator/jobs/{job_id}", headers=auth).json()
        if job["state"] != "running":
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.25)


def test_real_server_runs_an_operator_job(tmp_path):
    """``python -m offchain serve`` with the token from --config; a run-round job on a run
    folder without a deployment fails at once with the reason in its output."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    token = secrets.token_urlsafe(32)
    env_file = tmp_path / "node.env"
    env_file.write_text(f"CCOMP_API_TOKEN={token}\n")
    log = tmp_path / "server.log"
    with served(run_dir, log, "--config", str(env_file)) as base:
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{base}/operator/rounds/run").status_code == 401
        started = httpx.post(f"{base}/operator/rounds/run", headers=auth, json={})
        assert started.status_code == 202, started.text
        job = _wait_job(base, started.json()["job_id"], auth, 120)
        assert (job["state"], job["exit_code"]) == ("failed", 1), job
        assert "no deployment file" in job["output_tail"]
        assert job["args"][-2:] == ["--config", str(env_file.resolve())]
    assert token not in log.read_text()


def test_real_server_runs_a_whole_round_through_the_operator_endpoint(tmp_path):
    """Deploy, create and fund a tiny campaign on anvil, then ``POST /operator/rounds/run``:
    the job trains, signs (2-of-3 dev keys), posts, finalizes and claims round 1; the campaign
    view then shows it finalized with every stage done."""
    from offchain.chain import AnvilNode

    token = secrets.token_urlsafe(32)
    with AnvilNode(accounts=14) as anvil:
        env_file, settings, _, campaign_id = tiny_campaign(
            tmp_path, anvil.rpc_url, [f"CCOMP_API_TOKEN={token}"]
        )
        log = tmp_path / "server.log"
        with served(Path(settings.run_dir), log, "--config", str(env_file), "--dev") as base:
            auth = {"Authorization": f"Bearer {token}"}
            started = httpx.post(f"{base}/operator/rounds/run", headers=auth, json={"round_id": 1})
            assert started.status_code == 202, started.text
            job_id = started.json()["job_id"]
            assert httpx.post(f"{base}/operator/rounds/1/sign", headers=auth).status_code == 409
            job = _wait_job(base, job_id, auth, 300)
            assert (job["state"], job["exit_code"]) == ("succeeded", 0), job["output_tail"]
            rounds = httpx.get(f"{base}/campaigns/{campaign_id}/rounds").json()
            assert rounds[0]["round_id"] == 1 and rounds[0]["status"] == "finalized", rounds
            assert rounds[0]["status_source"] == "database"
            assert rounds[0]["stages"]["claim"] == "done" and rounds[0]["tx_hash"]
            detail = httpx.get(f"{base}/rounds/1").json()
            assert detail["round_status"] == "finalized"
            assert set(detail["provenance"]) == {
                "checkpoint_hash",
                "dataset_root",
                "attribution_hash",
            }
    assert token not in log.read_text()
