# ruff: noqa: F811  (the anvil fixture is imported from tests.chain_fixtures)
"""The step-by-step campaign commands (deploy, create-campaign, fund, status, reclaim) against a
real anvil node, through :mod:`offchain.oracle.operations` and the typer CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from offchain.chain import AnvilNode, ContractRevert
from offchain.cli.main import app
from offchain.config import Settings
from offchain.oracle import operations
from offchain.oracle.deployment import load_deployment
from tests.chain_fixtures import anvil  # noqa: F401  (session fixture)

WEI = 10**18


def _settings(anvil: AnvilNode, tmp_path: Path) -> Settings:
    return Settings(rpc_url=anvil.rpc_url, run_dir=tmp_path, n_rounds=2, total_budget_wei=100 * WEI)


def test_deploy_create_fund_status_then_reclaim_before_expiry_reverts(
    anvil: AnvilNode,
    tmp_path: Path,
) -> None:
    settings = _settings(anvil, tmp_path)
    deployment = operations.deploy(settings, dev=True)
    assert (tmp_path / "deployment.json").exists()
    campaign_id = operations.create_campaign(settings, deployment, dev=True)
    loaded = load_deployment(settings)
    assert loaded.campaign_id == campaign_id and loaded.pool == deployment.pool
    assert loaded.to_json()["threshold"] == settings.oracle_threshold

    funded = operations.fund(settings, loaded, campaign_id, 40 * WEI, dev=True)
    assert funded.minted_wei == 40 * WEI and funded.unallocated_wei == 40 * WEI

    state = operations.status(settings, loaded, campaign_id)
    assert state["total_funded_wei"] == 40 * WEI
    assert state["unallocated_wei"] == 40 * WEI
    assert state["rounds"] == [] and state["num_rounds"] == 2
    assert len(state["signers"]) == 3

    with pytest.raises(ContractRevert) as info:
        operations.reclaim(settings, loaded, campaign_id, dev=True)
    assert info.value.name == "ClaimWindowOpen"
    assert info.value.args[0] == campaign_id


def test_cli_deploy_status_and_reclaim_error(anvil: AnvilNode, tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["--rpc-url", anvil.rpc_url, "--deployment", str(tmp_path / "d.json")]
    result = runner.invoke(app, ["deploy", *common, "--dev", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pool"].startswith("0x")
    result = runner.invoke(app, ["create-campaign", *common, "--dev", "--rounds", "3"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["fund", str(5 * WEI), *common, "--dev"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["status", *common, "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["unallocated_wei"] == str(5 * WEI) and record["num_rounds"] == 3
    assert record["rounds"] == []
    result = runner.invoke(app, ["reclaim", *common, "--dev"])
    assert result.exit_code == 1
    assert "ClaimWindowOpen" in result.output


def test_cli_status_without_deployment_is_a_config_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["status", "--deployment", str(tmp_path / "none.json")])
    assert result.exit_code == 1
    assert "no deployment file" in result.output


def test_deploy_on_remote_chain_needs_a_sponsor_key(anvil: AnvilNode, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="sponsor key is required"):
        operations.deploy(_settings(anvil, tmp_path))
