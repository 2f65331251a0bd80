"""The node's use of the round-state database without ML: stages recorded and skipped, k-of-n
signing with co-signatures, and a postRound recorded but never sent (a crash) on real anvil."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from eth_account import Account

from offchain.allocation import RoundAllocation
from offchain.errors import StageError
from offchain.layout import RoundPaths
from offchain.oracle.chain_stages import (
    AwaitingSignatures,
    ChainStages,
    request_signatures,
    sign,
    submit,
)
from offchain.oracle.runner import RoundLedger, RoundStep, artifact_sha256
from offchain.oracle.signing import sign_round
from offchain.state import RoundStore, StageStatus, SubmissionStatus, make_engine, upgrade
from offchain.utils import read_json, sha256_file, write_json

pytest.register_assert_rewrite("tests.chain_fixtures")  # imported here before pytest_plugins
from tests.chain_fixtures import PROVENANCE, WEI, payout_tree  # noqa: E402

pytest_plugins = ["tests.chain_fixtures"]

KEYS = [Account.create(f"signer {i}").key.hex() for i in range(3)]
SIGNERS = [Account.from_key(k).address for k in KEYS]
POOL = "0x" + "42" * 20


@pytest.fixture()
def store(tmp_path: Path) -> RoundStore:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    return RoundStore(make_engine(url))


@pytest.fixture()
def round_pk(store: RoundStore) -> int:
    campaign = store.ensure_campaign(31337, POOL, 1, "run")
    return store.ensure_round(campaign, 1)


def _allocated_round(run_dir: Path, total_wei: int = 10 * WEI) -> RoundPaths:
    """A round folder as the allocate stage leaves it (allocation.json with a Merkle root)."""
    paths = RoundPaths(run_dir, 1)
    tree = payout_tree(SIGNERS[:2], [total_wei // 2, total_wei - total_wei // 2])
    write_json(paths.tree, tree.to_json())
    write_json(
        paths.allocation,
        {"round_id": 1, "total_wei": total_wei, "merkle_root": tree.root, "provenance": PROVENANCE},
    )
    return paths


# --------------------------------------------------------------------------- ledger


def test_a_done_stage_is_skipped_and_its_artifact_hash_recorded(tmp_path, store, round_pk):
    out = tmp_path / "out.json"
    calls = []
    step = RoundStep("policy", "policy", lambda: (calls.append(1), write_json(out, {"a": 1})), out)
    ledger = RoundLedger(store, round_pk, 1)
    assert ledger.run(step) is True
    assert ledger.run(step) is False
    assert calls == [1]
    record = store.stage_run(round_pk, "policy")
    assert record.status is StageStatus.DONE and record.output_sha256 == sha256_file(out)


def test_a_failing_stage_is_recorded_failed_and_runs_again(tmp_path, store, round_pk):
    attempts = []

    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("RPC down")

    step = RoundStep("submit", "submit", flaky, None)
    ledger = RoundLedger(store, round_pk, 1)
    with pytest.raises(RuntimeError):
        ledger.run(step)
    record = store.stage_run(round_pk, "submit")
    assert record.status is StageStatus.FAILED and "RPC down" in record.error
    assert ledger.run(step) is True
    assert store.stage_run(round_pk, "submit").attempts == 2


def test_a_done_stage_whose_artifact_vanished_is_a_clear_error(tmp_path, store, round_pk):
    out = tmp_path / "decision.json"
    step = RoundStep("policy", "policy", lambda: write_json(out, {}), out)
    RoundLedger(store, round_pk, 1).run(step)
    out.unlink()
    with pytest.raises(StageError, match="recorded done but .*decision.json is missing"):
        RoundLedger(store, round_pk, 1).run(step)


def _begin_and_exit(url: str, round_pk: int) -> None:
    RoundStore(make_engine(url)).begin_stage(round_pk, "train")  # then die without finishing


def test_a_stage_left_started_by_a_dead_process_runs_again(tmp_path, store, round_pk):
    url = str(store.engine.url)
    child = multiprocessing.get_context("spawn").Process(
        target=_begin_and_exit, args=(url, round_pk)
    )
    child.start()
    child.join(60)
    assert store.stage_status(round_pk, "train") is StageStatus.STARTED
    ran = []
    assert RoundLedger(store, round_pk, 1).run(
        RoundStep("train", "train", lambda: ran.append(1), None)
    )
    assert ran == [1] and store.stage_run(round_pk, "train").attempts == 2


def test_a_folder_artifact_hash_covers_every_file_but_hidden_temporaries(tmp_path):
    folder = tmp_path / "checkpoint"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "weights.bin").write_bytes(b"w")
    first = artifact_sha256(folder)
    (folder / ".weights.tmp").write_bytes(b"partial")
    assert artifact_sha256(folder) == first
    (folder / "unet" / "weights.bin").write_bytes(b"W")
    assert artifact_sha256(folder) != first


# --------------------------------------------------------------------------- k-of-n signing


def test_one_local_key_of_threshold_two_waits_for_a_cosigner(tmp_path):
    paths = _allocated_round(tmp_path)
    request_signatures(paths, 31337, POOL, 1, 1, 2_000_000_000)
    request = read_json(paths.signing_request)
    seen: list[str] = []
    with pytest.raises(AwaitingSignatures, match="1 of 2 oracle signatures") as waiting:
        sign(paths, KEYS[:1], SIGNERS, 2, on_signature=lambda signer, _: seen.append(signer))
    assert waiting.value.digest == request["digest"] and not paths.signature.exists()
    assert seen == [SIGNERS[0]]

    allocation = RoundAllocation.from_json(request["allocation"])
    stranger = Account.create("stranger").key.hex()
    not_a_signer = {
        Account.from_key(stranger).address: sign_round(stranger, 31337, POOL, allocation)
    }
    with pytest.raises(AwaitingSignatures):  # a non-signer's signature does not count
        sign(paths, KEYS[:1], SIGNERS, 2, cosignatures=not_a_signer)
    cosigner = {SIGNERS[1]: sign_round(KEYS[1], 31337, POOL, allocation)}
    sign(paths, KEYS[:1], SIGNERS, 2, cosignatures={**not_a_signer, **cosigner})
    signed = read_json(paths.signature)
    assert signed["digest"] == request["digest"]
    assert signed["signers"] == sorted(SIGNERS[:2], key=lambda a: int(a, 16))


def test_the_signing_request_is_fixed_once(tmp_path):
    paths = _allocated_round(tmp_path)
    request_signatures(paths, 31337, POOL, 1, 1, 2_000_000_000)
    first = read_json(paths.signing_request)
    request_signatures(paths, 31337, POOL, 1, 1, 2_000_000_999)  # a restart: later deadline
    assert read_json(paths.signing_request) == first


# --------------------------------------------------------------------------- never post twice


def test_a_recorded_but_never_sent_post_is_failed_and_posted_once(
    tmp_path, deploy_pool, roles, store
):
    deployment = deploy_pool()
    campaign = deployment.campaign(signers=roles.signers[:2], threshold=2)
    campaign.fund(roles.sponsor_a, 100 * WEI)
    pool, chain = campaign.pool, campaign.chain
    paths = _allocated_round(tmp_path)
    chain_stages = ChainStages(
        chain,
        pool,
        campaign.campaign_id,
        roles.signers[:2],
        roles.relayer,
        {},
        True,
        3600,
        signers=tuple(Account.from_key(k).address for k in roles.signers[:2]),
        threshold=2,
    )
    campaign_pk = store.ensure_campaign(chain.chain_id, pool.address, campaign.campaign_id, "r")
    round_pk = store.ensure_round(campaign_pk, 1)
    chain_stages.sign(paths, store, round_pk)

    ghost = "0x" + "ab" * 32  # what a process killed between recording and sending leaves
    store.record_submission(round_pk, ghost, 0)
    chain_stages.submit(paths, store, round_pk)

    assert pool.next_round_id(campaign.campaign_id) == 2
    live = store.live_submission(round_pk)
    assert live.status is SubmissionStatus.CONFIRMED and live.tx_hash != ghost
    assert live.tx_hash == read_json(paths.submission)["tx_hash"]
    assert store.round_status(round_pk).value == "challengeable"
    with pytest.raises(StageError, match="refusing to submit it twice"):
        store.record_submission(round_pk, "0x" + "cd" * 32, 1)

    paths.submission.unlink()  # a lost artifact: the chain says it is posted, nothing is sent
    nonce = chain.w3.eth.get_transaction_count(Account.from_key(roles.relayer).address)
    submit(paths, pool, roles.relayer)
    assert read_json(paths.submission)["already_posted"] is True
    assert chain.w3.eth.get_transaction_count(Account.from_key(roles.relayer).address) == nonce


def test_submit_fills_a_round_the_guardian_revoked_below_the_latest(tmp_path, deploy_pool, roles):
    """The guardian may revoke round 1 after round 2 is posted; the node's re-signed round 1
    goes into that gap (the next round id stays 3) instead of being refused as a root clash."""
    deployment = deploy_pool()
    campaign = deployment.campaign()
    campaign.fund(roles.sponsor_a, 100 * WEI)
    pool, cid = campaign.pool, campaign.campaign_id
    campaign.post(1, payout_tree(SIGNERS[:1], [40 * WEI]))
    campaign.post(2, payout_tree(SIGNERS[1:2], [WEI]))
    pool.revoke_round(roles.guardian, cid, 1)
    paths = _allocated_round(tmp_path)
    allocation = campaign.allocation(1, payout_tree(SIGNERS[:2], [5 * WEI, 5 * WEI]))
    write_json(paths.signature, {"allocation": allocation.to_json(),
                                 "signatures": campaign.sign(allocation)})
    submit(paths, pool, roles.relayer)
    on_chain = pool.get_round(cid, 1)
    assert on_chain.merkle_root == allocation.merkle_root and on_chain.total_wei == 10 * WEI
    assert pool.next_round_id(cid) == 3
    assert "tx_hash" in read_json(paths.submission)
