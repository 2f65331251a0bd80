"""k-of-n signing across machines: a node holding one of the campaign's three signer keys (k = 2)
stops at the sign stage; a co-signer fetches the signing request from the real API process,
signs it with its own key (``python -m offchain cosign``) and posts it; the node's next run posts
the round with both signatures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from offchain.chain import AnvilNode, address_of, derive_private_keys
from offchain.chain.anvil import DEFAULT_MNEMONIC
from offchain.cli.main import app
from offchain.layout import RoundPaths
from offchain.oracle import operations
from offchain.utils import read_json
from tests.oracle_procs import get, offchain, served, tiny_campaign

DEV_KEYS = derive_private_keys(DEFAULT_MNEMONIC, 10)


def _json_tail(stdout: str) -> dict:
    return json.loads(stdout)  # with --json, stdout holds the JSON document only


def test_a_cosigner_over_the_api_completes_the_threshold(tmp_path: Path) -> None:
    with AnvilNode() as anvil:
        # The campaign's signers are dev accounts 5, 6, 7 (k = 2); this node holds only 5.
        env_file, settings, deployment, campaign_id = tiny_campaign(
            tmp_path,
            anvil.rpc_url,
            [
                f'CCOMP_ORACLE_KEYS=["{DEV_KEYS[5]}"]',
                "CCOMP_ORACLE_SIGNERS=" + json.dumps([address_of(DEV_KEYS[i]) for i in (5, 6, 7)]),
            ],
        )
        run = ("run-round", "--config", str(env_file), "--dev", "--json")
        waiting = offchain(*run)
        assert waiting.returncode == 1
        assert "1 of 2 oracle signatures" in waiting.stdout + waiting.stderr
        paths = RoundPaths(Path(settings.run_dir), 1)
        assert paths.signing_request.exists() and not paths.signature.exists()
        pool = operations._connect(settings, deployment)[1]
        assert pool.next_round_id(campaign_id) == 1  # nothing posted

        runner = CliRunner()
        with served(Path(settings.run_dir), tmp_path / "serve.log") as api:
            assert (
                get(f"{api}/rounds/1/signing-request")[1]["digest"]
                == read_json(paths.signing_request)["digest"]
            )
            outsider = runner.invoke(
                app, ["cosign", "--api", api, "--round", "1", "--dev-index", "8", "--json"]
            )
            assert outsider.exit_code == 1 and "403" in outsider.output
            wrong_pool = tmp_path / "other.json"
            wrong_pool.write_text(json.dumps({**deployment.to_json(), "pool": "0x" + "11" * 20}))
            refused = runner.invoke(
                app,
                [
                    "cosign",
                    "--api",
                    api,
                    "--round",
                    "1",
                    "--dev-index",
                    "6",
                    "--deployment",
                    str(wrong_pool),
                ],
            )
            assert refused.exit_code == 1 and "refusing to sign" in refused.output
            signed = runner.invoke(
                app,
                [
                    "cosign",
                    "--api",
                    api,
                    "--round",
                    "1",
                    "--dev-index",
                    "6",
                    "--json",
                    "--deployment",
                    str(Path(settings.run_dir) / "deployment.json"),
                ],
            )
            assert signed.exit_code == 0, signed.output
            answer = json.loads(signed.output)
            assert answer["collected"] == 2 and answer["threshold"] == 2

        done = offchain(*run)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert _json_tail(done.stdout)["status"] == "finalized"
        posted = read_json(paths.signature)
        signers = [address_of(DEV_KEYS[i]) for i in (5, 6)]
        assert posted["signers"] == sorted(signers, key=lambda a: int(a, 16))
        assert pool.next_round_id(campaign_id) == 2


@pytest.mark.parametrize("bad", ["nonsense", "http://127.0.0.1:9"])
def test_cosign_reports_an_unreachable_or_bad_api(bad: str) -> None:
    result = CliRunner().invoke(app, ["cosign", "--api", bad, "--round", "1", "--dev-index", "6"])
    assert result.exit_code == 1 and "error" in result.output
