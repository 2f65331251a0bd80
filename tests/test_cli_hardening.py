# ruff: noqa: F811  (the anvil fixture is imported from tests.chain_fixtures)
"""Issue 13, CLI and node: every refusal is one line on stderr and a non-zero exit, nothing is
lost (the run folder survives bad input), and ``--json`` prints one JSON document only.

Real components throughout: the typer app through ``CliRunner``, ``python -m offchain`` in a
subprocess where the process itself is at stake (deep JSON), a real anvil node where a chain is
needed, a real HTTP server for ``cosign``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from offchain.chain import AnvilNode
from offchain.chain.anvil import DEFAULT_MNEMONIC, derive_private_keys
from offchain.cli.main import EXIT_NOTHING_TO_CLAIM, app
from offchain.config import PROJECT_ROOT
from offchain.oracle.run_folder import RUN_MARKER, is_run_folder, prepare_run_dir
from tests.chain_fixtures import anvil  # noqa: F401  (session fixture)
from tests.json_safety import unsafe_for_javascript

WEI = 10**18
DEV_KEYS = derive_private_keys(DEFAULT_MNEMONIC, 10)
DEAD_RPC = "http://127.0.0.1:9"  # nothing listens: a command that gets this far fails


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def assert_refused(result: Result, *fragments: str, code: int = 1) -> str:
    """Exit ``code``, no traceback, exactly one ``error: …`` line on stderr holding
    ``fragments``; returns that line."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(root: Path) -> list[tuple[str, bytes | None]]:
    return sorted(
        (str(p.relative_to(root)), p.read_bytes() if p.is_file() else None)
        for p in root.rglob("*")
    )


@pytest.fixture()
def remote_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys for a remote chain, so that ``demo --rpc-url`` gets past the key checks."""
    monkeypatch.setenv("CCOMP_ORACLE_KEYS", json.dumps(DEV_KEYS[5:8]))
    monkeypatch.setenv("CCOMP_SPONSOR_KEY", DEV_KEYS[2])


def _old_run(root: Path, marked: bool = True) -> Path:
    """A previous run's folder: deployment, state database, a round's artifacts."""
    (root / "round_001").mkdir(parents=True)
    (root / "round_001" / "allocation.json").write_text('{"total_wei": "5"}')
    (root / "deployment.json").write_text('{"pool": "0x0"}')
    (root / "state.db").write_bytes(b"SQLite format 3\x00")
    if marked:
        (root / RUN_MARKER).write_text("run\n")
    return root


def _holder_folders(root: Path, addresses: dict[str, str]) -> Path:
    for name, address in addresses.items():
        (root / name).mkdir(parents=True)
        Image.new("L", (16, 16), 100).save(root / name / "a.png")
        (root / name / "holder.json").write_text(json.dumps({"address": address}))
    return root


# --- item 2: demo validates before it deletes, and deletes only run folders -------------------


def test_demo_with_a_bad_holders_dir_keeps_the_previous_run(tmp_path: Path) -> None:
    run = _old_run(tmp_path / "run")
    before = snapshot(run)
    result = invoke("demo", "--run-dir", str(run), "--holders-dir", str(tmp_path / "missing"))
    assert snapshot(run) == before
    assert_refused(result, "missing", "does not exist")


def test_demo_fresh_refuses_to_delete_a_folder_that_is_not_a_run_folder(
    tmp_path: Path, remote_keys: None
) -> None:
    folder = tmp_path / "mine"
    (folder / "thesis").mkdir(parents=True)
    (folder / "thesis" / "chapter1.tex").write_text("years of work")
    (folder / "notes.txt").write_text("keep me")
    before = snapshot(folder)
    result = invoke("demo", "--profile", "tiny", "--run-dir", str(folder), "--rpc-url", DEAD_RPC)
    assert snapshot(folder) == before
    assert_refused(result, str(folder), "not a run folder", "nothing was deleted")


def test_demo_fresh_refuses_an_older_run_folder_holding_a_foreign_file(
    tmp_path: Path, remote_keys: None
) -> None:
    run = _old_run(tmp_path / "run", marked=False)
    (run / "my_notes.md").write_text("not the project's")
    before = snapshot(run)
    result = invoke("demo", "--profile", "tiny", "--run-dir", str(run), "--rpc-url", DEAD_RPC)
    assert snapshot(run) == before
    assert_refused(result, "not a run folder")


def test_holders_lists_the_emoji_artists_with_their_licences() -> None:
    result = invoke("holders", "--dataset", "emoji", "--profile", "tiny")
    assert result.exit_code == 0, result.output
    assert "noto-smileys" in result.output and "Apache-2.0" in result.output
    assert "twemoji-smileys" in result.output and "CC-BY-4.0" in result.output
    mnist = invoke("holders", "--profile", "tiny")
    assert "holder_0" in mnist.output and "Apache" not in mnist.output


def test_demo_refuses_an_unknown_dataset_or_device_before_touching_the_run(
    tmp_path: Path,
) -> None:
    run = _old_run(tmp_path / "run")
    before = snapshot(run)
    assert_refused(invoke("demo", "--run-dir", str(run), "--dataset", "cifar"),
                   "unknown dataset 'cifar'", "mnist, emoji")
    assert_refused(invoke("demo", "--run-dir", str(run), "--device", "tpu"), "device")
    assert_refused(invoke("demo", "--run-dir", str(run), env={"CCOMP_DATASET": "cifar"}),
                   "unknown dataset")
    assert snapshot(run) == before


def test_prepare_run_dir_marks_new_folders_and_empties_only_run_folders(tmp_path: Path) -> None:
    new = tmp_path / "new"
    prepare_run_dir(new, fresh=True)
    assert [p.name for p in new.iterdir()] == [RUN_MARKER] and is_run_folder(new)

    marked = _old_run(tmp_path / "marked")
    prepare_run_dir(marked, fresh=True)
    assert [p.name for p in marked.iterdir()] == [RUN_MARKER]

    older = _old_run(tmp_path / "older", marked=False)  # a run folder of a version before 13
    assert is_run_folder(older)
    prepare_run_dir(older, fresh=False)  # kept, and marked from now on
    assert (older / "round_001" / "allocation.json").exists() and (older / RUN_MARKER).exists()
    prepare_run_dir(older, fresh=True)
    assert [p.name for p in older.iterdir()] == [RUN_MARKER]

    (tmp_path / "file").write_text("x")
    assert not is_run_folder(tmp_path / "file")
    (tmp_path / "link").symlink_to(marked)
    assert not is_run_folder(tmp_path / "link")


# --- item 4: two holders with one payout address ------------------------------------------------


def test_holders_and_demo_refuse_two_holders_with_one_address(
    tmp_path: Path, remote_keys: None
) -> None:
    address = "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2"
    holders = _holder_folders(tmp_path / "holders", {"alice": address, "bob": address.lower()})
    assert_refused(invoke("holders", "--holders-dir", str(holders)), "'alice' and 'bob'")
    run = tmp_path / "run"
    result = invoke("demo", "--holders-dir", str(holders), "--run-dir", str(run),
                    "--rpc-url", DEAD_RPC)
    assert_refused(result, "'alice' and 'bob' have the same payout address")
    assert not run.exists()


# --- item 5: a 16-bit PNG through the registration API and the loader ---------------------------


def test_registration_api_and_loader_read_a_16_bit_png_as_gray_not_white(tmp_path: Path) -> None:
    import io

    from fastapi.testclient import TestClient

    from offchain.api.app import create_app
    from offchain.data.holders import load_holder_folders
    from tests.test_registration import ALICE, LIMITS, files, sign

    pixels = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")  # mode I;16
    data = buffer.getvalue()
    holders = tmp_path / "holders"
    holders.mkdir()
    client = TestClient(create_app(tmp_path / "run", holders, LIMITS))
    response = client.post("/holders", data=sign(ALICE, [data]), files=files([data]))
    assert response.status_code == 201, response.text
    (loaded,) = load_holder_folders(holders, image_size=16)
    expected = ((pixels.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
    np.testing.assert_array_equal(loaded.images[0], expected)


# --- item 10: one-line errors instead of tracebacks ---------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("zz" * 32, "does not hold a private key"),  # not hex
        ("0x1234", "does not hold a private key"),  # short
        ("0x" + "00" * 32, "does not hold a private key"),  # outside the secp256k1 range
        (None, "not found"),  # missing file
        ("DIR", "is a folder"),
    ],
)
def test_claim_refuses_a_bad_key_file_in_one_line(
    tmp_path: Path, content: str | None, fragment: str
) -> None:
    key_file = tmp_path / "key"
    if content == "DIR":
        key_file.mkdir()
    elif content is not None:
        key_file.write_text(content + "\n")
    result = invoke("claim", "--key-file", str(key_file),
                    "--deployment", str(tmp_path / "none.json"))
    line = assert_refused(result, "key file", fragment)
    if content not in (None, "DIR"):
        assert content not in line  # the key file's content is never echoed


@pytest.mark.parametrize("amount", [str(2**256), str(10**100), "0"])
def test_fund_refuses_an_amount_outside_uint256(tmp_path: Path, amount: str) -> None:
    result = invoke("fund", amount, "--deployment", str(tmp_path / "none.json"))
    assert_refused(result, "uint256")


CORRUPT_DEPLOYMENTS = {
    "not JSON": "{ this is not json",
    "a list": "[1, 2]",
    "no pool": json.dumps({"rpc_url": DEAD_RPC, "chain_id": 31337, "token": "0x" + "11" * 20}),
    "chain id a string": json.dumps({"rpc_url": DEAD_RPC, "chain_id": "abc",
                                     "token": "0x" + "11" * 20, "pool": "0x" + "22" * 20}),
    "pool no address": json.dumps({"rpc_url": DEAD_RPC, "chain_id": 1,
                                   "token": "0x" + "11" * 20, "pool": "nowhere"}),
}
COMMANDS = {
    "status": ["status"],
    "fund": ["fund", "5"],
    "claim": ["claim", "--holder", "holder_0"],
    "reclaim": ["reclaim", "--dev"],
    "create-campaign": ["create-campaign", "--dev"],
    "run-round": ["run-round", "--dev"],
    "cosign": ["cosign", "--api", DEAD_RPC, "--round", "1", "--dev-index", "5"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("corruption", sorted(CORRUPT_DEPLOYMENTS))
def test_commands_refuse_a_corrupt_deployment_file_in_one_line(
    tmp_path: Path, command: str, corruption: str
) -> None:
    deployment = tmp_path / "deployment.json"
    deployment.write_text(CORRUPT_DEPLOYMENTS[corruption])
    result = invoke(*COMMANDS[command], "--deployment", str(deployment))
    assert_refused(result, "deployment file", str(deployment))


# --- item 11: configuration and claim -----------------------------------------------------------


def test_an_unknown_ccomp_variable_in_the_environment_is_an_error(tmp_path: Path) -> None:
    result = invoke("status", "--deployment", str(tmp_path / "none.json"),
                    env={"CCOMP_N_RUNDS": "2"})
    assert_refused(result, "unknown setting CCOMP_N_RUNDS in the environment",
                   "did you mean CCOMP_N_ROUNDS")


def test_every_ccomp_variable_a_component_reads_is_a_setting(tmp_path: Path) -> None:
    env = {"CCOMP_FAULT_KILL": "never:here", "CCOMP_COSIGN_WAIT_S": "1",
           "CCOMP_KEYSTORE_PASSWORD": "a-strong-passphrase-42",
           "CCOMP_ANVIL_PATH": str(PROJECT_ROOT / "node_modules" / "none")}
    result = invoke("status", "--deployment", str(tmp_path / "none.json"), env=env)
    assert_refused(result, "no deployment file")  # the settings were accepted


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("# sizes\n\nCCOMP_SEED=1\nthis line is not a setting\n", ("line 4", "not KEY=VALUE")),
        ("CCOMP_SEED=1\nCCOMP_N_ROUNDS\n", ("line 2", "not KEY=VALUE")),
        ("CCOMP_SEED=1\n\nCCOMP_N_RUNDS=2\n", ("line 3", "unknown setting CCOMP_N_RUNDS")),
        ("CCOMP_N_ROUNDS=0\n", ("n_rounds",)),
    ],
)
def test_a_bad_config_file_line_is_an_error_naming_it(
    tmp_path: Path, text: str, fragments: tuple[str, ...]
) -> None:
    config = tmp_path / "node.env"
    config.write_text(text)
    result = invoke("status", "--config", str(config), "--deployment", str(tmp_path / "d.json"))
    assert_refused(result, *fragments)


def test_claim_with_nothing_to_claim_says_so_and_exits_3(anvil: AnvilNode, tmp_path: Path) -> None:
    common = ["--rpc-url", anvil.rpc_url, "--deployment", str(tmp_path / "d.json")]
    assert invoke("deploy", *common, "--dev").exit_code == 0
    assert invoke("create-campaign", *common, "--dev", "--rounds", "2").exit_code == 0
    key_file = tmp_path / "key"
    key_file.write_text("0x" + "42" * 32)
    result = invoke("claim", *common, "--key-file", str(key_file),
                    "--run-dir", str(tmp_path / "run"), "--json")
    assert result.exit_code == EXIT_NOTHING_TO_CLAIM, result.output
    assert json.loads(result.stdout)["amount_wei"] == "0"
    assert "nothing to claim for 0x" in result.stderr


# --- item 15: --json prints one JSON document; run-round takes a profile ------------------------


@pytest.fixture(scope="module")
def funded(anvil: AnvilNode, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A deployed, funded 2-round campaign (each command's --json is one document)."""
    deployment = tmp_path_factory.mktemp("funded") / "d.json"
    common = ["--rpc-url", anvil.rpc_url, "--deployment", str(deployment)]
    for args in (["deploy", "--dev"], ["create-campaign", "--dev", "--rounds", "2"],
                 ["fund", str(50 * WEI), "--dev"], ["status"]):
        result = invoke(*args, *common, "--json")
        assert result.exit_code == 0, result.output
        record = json.loads(result.stdout)  # nothing but the document on stdout
        assert unsafe_for_javascript(record) == [], args  # wei as decimal strings (item 12)
    assert record["total_funded_wei"] == str(50 * WEI)
    return common


def test_run_round_json_prints_only_the_json_document(funded: list[str], tmp_path: Path) -> None:
    config = tmp_path / "tiny.env"
    config.write_text("CCOMP_N_HOLDERS=4\nCCOMP_HOLDER_SIZES=[6,8,10,12]\nCCOMP_QUALITY_SAMPLES=8\n"
                      "CCOMP_QUALITY_CLASSIFIER_EPOCHS=1\n")
    result = invoke("run-round", *funded, "--dev", "--json", "--until", "prepare",
                    "--config", str(config), "--run-dir", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)  # the stage lines and the table are not on stdout
    assert record["round_id"] == 1 and record["stages"]["prepare"] == "done"
    assert "round 1: prepare" in result.stderr  # progress went to stderr


def test_run_round_honours_profile_flag_and_environment(funded: list[str], tmp_path: Path) -> None:
    common = funded
    by_flag = tmp_path / "by_flag"
    result = invoke("run-round", *common, "--dev", "--json", "--until", "prepare",
                    "--profile", "tiny", "--run-dir", str(by_flag))
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["round_id"] == 1 and record["stages"]["prepare"] == "done"
    assert "round 1: prepare" in result.stderr  # progress went to stderr
    assert len(json.loads((by_flag / "holders.json").read_text())["holders"]) == 4  # tiny

    by_env = tmp_path / "by_env"
    result = invoke("run-round", *common, "--dev", "--json", "--until", "prepare",
                    "--run-dir", str(by_env), env={"CCOMP_PROFILE": "tiny"})
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)
    assert len(json.loads((by_env / "holders.json").read_text())["holders"]) == 4


# --- item 1 (client): cosign parses a remote signing request with bounds ------------------------


class _Answer(BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def api_answering() -> Iterator[callable]:
    servers = []

    def start(body: bytes) -> str:
        handler = type("Handler", (_Answer,), {"body": body})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("depth", "fragment"),
    [(30_000, "nested deeper than 64 levels"), (200_000, "bytes > limit of 65536 bytes")],
)
def test_cosign_refuses_a_deeply_nested_signing_request_without_crashing(
    api_answering, depth: int, fragment: str
) -> None:
    url = api_answering(b"[" * depth + b"]" * depth)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCOMP_")}
    done = subprocess.run(
        [sys.executable, "-m", "offchain", "cosign", "--api", url, "--round", "1",
         "--dev-index", "5"],
        capture_output=True, text=True, timeout=300, env=env, cwd=PROJECT_ROOT,
    )
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], done.stderr[-2000:]


@pytest.mark.parametrize("body", [b'{"allocation": 7}', b"[]", b"not json", b'{"chain_id": 1}'])
def test_cosign_refuses_a_malformed_signing_request_in_one_line(api_answering, body) -> None:
    url = api_answering(body)
    result = invoke("cosign", "--api", url, "--round", "1", "--dev-index", "5")
    assert_refused(result, "signing request")
