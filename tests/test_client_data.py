"""What an outside (JavaScript) client reads from the node's files and the API (issue 13).

- item 12: every wei amount and every uint256 that can exceed 2⁵³ is a decimal string in every
  artifact and response, so ``JSON.parse`` keeps 208873506586492146964 exact and a browser
  rebuilds the Merkle tree and the EIP-712 digest; readers parse strictly (``parse_wei``);
- item 13: ``claimed`` is what the chain says (the pool's ``Claimed`` events), also for a claim
  sent without the node; without an RPC it is the node's ``claims.json`` and says so;
- item 14: ``GET /rounds/{id}`` returns the k-of-n signatures, their signers and the threshold;
- item 4: an address paid through several leaves gets every one of them;
- item 11: the proof endpoint refuses a mixed-case address with a wrong EIP-55 checksum.

Real components: the node's own stages and signing functions write the artifacts, the real app
serves them, and the chain test runs on anvil.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from eth_account import Account
from fastapi.testclient import TestClient

from offchain.allocation import PayoutTree, RoundAllocation, WeiFormatError, parse_wei, wei_str
from offchain.allocation.merkle import leaf_hash, verify_proof
from offchain.api.app import create_app
from offchain.layout import RoundPaths
from offchain.oracle.chain_stages import request_signatures, sign
from offchain.oracle.signing import SigningError, round_digest
from offchain.policy import make_policy
from offchain.rounds import stages
from offchain.utils import read_json, write_json, write_npy
from tests.json_safety import js_parse, json_artifacts, unsafe_for_javascript

BIG = 208873506586492146964
"""Rounded by ``JSON.parse`` to 208873506586492141568."""
CHAIN_ID = 31337
POOL = "0x" + "5f" * 20
KEYS = ["0x" + f"{i:02x}" * 32 for i in (0x11, 0x22, 0x33)]
SIGNERS = [Account.from_key(k).address for k in KEYS]
ADDRESSES = [Account.from_key("0x" + f"{i:064x}").address for i in range(1, 5)]


def _synthetic_round(run_dir: Path, round_id: int, contribution: list[float],
                     addresses: list[str] = ADDRESSES) -> RoundPaths:
    """The artifacts decide and allocate read, without any ML."""
    paths = RoundPaths(run_dir, round_id)
    paths.dir.mkdir(parents=True)
    holders = [
        {"index": i, "name": f"h{i}", "address": a, "n_images": 10, "participating": True}
        for i, a in enumerate(addresses)
    ]
    write_json(paths.manifest, {"round_id": round_id, "n_holders": len(addresses),
                                "holders": holders, "dataset_root": "d5" * 32})
    write_json(paths.contributions, {"normalized": list(contribution)})
    write_json(paths.copyright, {"loss": [0.0] * len(addresses)})
    write_npy(paths.trak_dir / "scores.npy", np.zeros((2, len(addresses)), dtype=np.float32))
    (paths.checkpoint / "unet").mkdir(parents=True)
    (paths.checkpoint / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"w")
    return paths


def _deployment(run_dir: Path, **extra) -> None:
    write_json(run_dir / "deployment.json", {
        "rpc_url": "http://127.0.0.1:1", "chain_id": CHAIN_ID, "token": "0x" + "70" * 20,
        "pool": POOL, "test_token": True, "campaign_id": 1, "signers": SIGNERS,
        "threshold": 2, "total_budget_wei": wei_str(10 * BIG), "round_cap_wei": wei_str(BIG),
        "holder_cap_wei": wei_str(BIG), "challenge_window_s": 3600, **extra,
    })


@pytest.fixture()
def big_round(tmp_path: Path) -> tuple[Path, RoundPaths]:
    """Round 1 decided, allocated, its signing request written and signed 2-of-3 by the
    node's own functions, with one holder paid exactly ``BIG`` wei."""
    run_dir = tmp_path / "run"
    paths = _synthetic_round(run_dir, 1, [1.0, 0.0, 0.0, 0.0])
    stages.decide(paths, make_policy("linear/contribution"), 1, BIG)
    stages.allocate(paths)
    request_signatures(paths, CHAIN_ID, POOL, 1, 1, deadline=2**40)
    sign(paths, KEYS[:2], SIGNERS, 2)
    _deployment(run_dir)
    return run_dir, paths


# -- item 12: wei as decimal strings ---------------------------------------------------------


def test_every_artifact_keeps_wei_exact_for_a_javascript_client(big_round) -> None:
    run_dir, paths = big_round
    files = json_artifacts(run_dir)
    assert {p.name for p in files} >= {"decision.json", "allocation.json", "tree.json",
                                      "signing_request.json", "signature.json"}
    problems = [f"{p.name}: {msg}" for p, data in files.items()
                for msg in unsafe_for_javascript(data)]
    assert problems == []

    # a browser: JSON.parse, then BigInt(amount) for the leaves and the signed struct
    allocation = js_parse(paths.allocation.read_text())
    paid = [h for h in allocation["holders"] if h["amount_wei"] != "0"]
    assert [h["amount_wei"] for h in paid] == [str(BIG)]
    tree = PayoutTree.build([(h["index"], h["address"], int(h["amount_wei"])) for h in paid])
    assert tree.root == allocation["merkle_root"]
    request = js_parse(paths.signing_request.read_text())
    assert request["allocation"]["total_wei"] == str(BIG)
    rebuilt = RoundAllocation.from_json(request["allocation"])
    assert "0x" + round_digest(request["chain_id"], request["verifying_contract"],
                               rebuilt).hex() == request["digest"]
    signed = js_parse(paths.signature.read_text())
    assert signed["allocation"] == request["allocation"]


def test_every_api_response_keeps_wei_exact_for_a_javascript_client(big_round) -> None:
    run_dir, paths = big_round
    client = TestClient(create_app(run_dir))
    holder = ADDRESSES[0]
    responses = {
        url: client.get(url)
        for url in ("/rounds", "/rounds/1", "/rounds/1/signing-request",
                    f"/holders/{holder}/claims", "/campaigns", "/campaigns/1",
                    "/campaigns/1/rounds", "/health")
    }
    for url, response in responses.items():
        assert response.status_code == 200, (url, response.text)
        assert unsafe_for_javascript(js_parse(response.text)) == [], url
    claims = js_parse(responses[f"/holders/{holder}/claims"].text)
    (claim,) = claims["claims"]
    assert claim["amount_wei"] == claims["total_wei"] == str(BIG)
    leaf = leaf_hash(claim["index"], claim["account"], int(claim["amount_wei"]))
    assert verify_proof(claim["merkle_root"], leaf, claim["proof"])
    served = js_parse(responses["/rounds/1/signing-request"].text)
    assert served == read_json(paths.signing_request)


def test_parse_wei_is_strict_and_names_the_field() -> None:
    assert parse_wei(str(BIG), "amount_wei") == BIG == parse_wei(wei_str(BIG))
    assert parse_wei("0") == 0 and parse_wei(str(2**256 - 1)) == 2**256 - 1
    assert parse_wei(BIG) == BIG  # a run folder written before amounts were strings
    for bad in ("-1", "+1", "1e21", "1.0", " 1", "1 ", "01", "", "0x10", "1_000", "١",
                str(2**256), 1.0, True, None, [1]):
        with pytest.raises(WeiFormatError, match="budget_wei"):
            parse_wei(bad, "budget_wei")
    with pytest.raises(WeiFormatError, match="total_wei"):
        parse_wei(5, "total_wei", legacy_int=False)
    with pytest.raises(WeiFormatError):
        wei_str(-1)
    with pytest.raises(WeiFormatError):
        wei_str(1.5)  # type: ignore[arg-type]


def test_a_signing_request_with_a_malformed_uint_is_refused_naming_the_field(big_round) -> None:
    _, paths = big_round
    request = read_json(paths.signing_request)
    for field, bad in (("total_wei", "2.5e20"), ("deadline", "-1"), ("round_id", 1.0)):
        with pytest.raises(SigningError, match=field):
            RoundAllocation.from_json({**request["allocation"], field: bad})


def test_a_run_folder_written_with_integer_amounts_is_still_read(big_round) -> None:
    """Backward compatibility: Python reads old integer amounts exactly."""
    run_dir, paths = big_round
    allocation = read_json(paths.allocation)
    legacy = {**allocation, "budget_wei": BIG, "total_wei": BIG,
              "holders": [{**h, "amount_wei": int(h["amount_wei"])} for h in allocation["holders"]]}
    write_json(paths.allocation, legacy)
    body = TestClient(create_app(run_dir)).get(f"/holders/{ADDRESSES[0]}/claims").json()
    assert body["total_wei"] == str(BIG)


# -- item 14: the round's k-of-n signatures ---------------------------------------------------


def test_round_detail_returns_the_k_of_n_signatures_their_signers_and_the_threshold(
    big_round,
) -> None:
    run_dir, paths = big_round
    detail = TestClient(create_app(run_dir)).get("/rounds/1").json()
    signed = read_json(paths.signature)
    assert detail["threshold"] == 2
    assert detail["digest"] == signed["digest"]
    expected = sorted(SIGNERS[:2], key=lambda a: int(a, 16))
    assert [s["signer"] for s in detail["signatures"]] == expected
    allocation = RoundAllocation.from_json(signed["allocation"])
    from offchain.oracle.signing import recover_round_signer

    for entry in detail["signatures"]:
        assert recover_round_signer(entry["signature"], CHAIN_ID, POOL, allocation) == entry[
            "signer"]
    assert detail["status"] == "signed" and detail["claimed_source"] == "node"
    assert [h["claimed"] for h in detail["holders"]] == [False, None, None, None]


# -- item 4: one payout address, several leaves -----------------------------------------------


def test_the_claims_endpoint_returns_every_leaf_of_an_address_in_every_round(tmp_path) -> None:
    run_dir = tmp_path / "run"
    shared = ADDRESSES[0]
    addresses = [shared, ADDRESSES[1], shared, ADDRESSES[2]]
    for round_id in (1, 2):
        paths = _synthetic_round(run_dir, round_id, [0.4, 0.1, 0.3, 0.2], addresses)
        stages.decide(paths, make_policy("linear/contribution"), 2, 2 * BIG)
        stages.allocate(paths)
    body = TestClient(create_app(run_dir)).get(f"/holders/{shared.lower()}/claims").json()
    leaves = [(c["round_id"], c["index"]) for c in body["claims"]]
    assert leaves == [(1, 0), (1, 2), (2, 0), (2, 2)]
    total = 0
    for claim in body["claims"]:
        allocation = read_json(RoundPaths(run_dir, claim["round_id"]).allocation)
        holder = allocation["holders"][claim["index"]]
        assert claim["amount_wei"] == holder["amount_wei"] and claim["account"] == shared
        leaf = leaf_hash(claim["index"], shared, int(claim["amount_wei"]))
        assert verify_proof(allocation["merkle_root"], leaf, claim["proof"])
        total += int(claim["amount_wei"])
    assert body["total_wei"] == str(total)


# -- item 11: EIP-55 checksums as at registration ----------------------------------------------


def test_the_claims_endpoint_refuses_a_wrong_checksum_like_registration(big_round) -> None:
    run_dir, _ = big_round
    client = TestClient(create_app(run_dir))
    address = ADDRESSES[0]
    body = address[2:]
    for accepted in (address, "0x" + body.lower(), "0x" + body.upper()):
        response = client.get(f"/holders/{accepted}/claims")
        assert response.status_code == 200, (accepted, response.text)
        assert response.json()["address"] == address and response.json()["claims"]
    flipped = next(i for i, c in enumerate(body) if c.isalpha())
    wrong = "0x" + body[:flipped] + body[flipped].swapcase() + body[flipped + 1:]
    response = client.get(f"/holders/{wrong}/claims")
    assert response.status_code == 422
    assert "checksum" in response.json()["detail"] and address in response.json()["detail"]
    assert client.get("/holders/0x1234/claims").status_code == 422


# -- item 13: claimed as the chain says ---------------------------------------------------------


pytest_plugins = ["tests.chain_fixtures"]


def test_a_claim_sent_without_the_node_reads_claimed_from_the_chain(
    anvil, chain, compiled, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from offchain.chain import address_of
    from offchain.chain.pool import PoolClient
    from offchain.config import Settings
    from offchain.oracle import operations
    from offchain.oracle.signing import sign_round_k_of_n
    from tests.chain_fixtures import HOUR, PROVENANCE, WEI

    run_dir = tmp_path / "run"
    settings = Settings(rpc_url=anvil.rpc_url, run_dir=run_dir, n_rounds=2,
                        total_budget_wei=100 * WEI)
    deployment = operations.deploy(settings, dev=True)
    campaign_id = operations.create_campaign(settings, deployment, dev=True)
    operations.fund(settings, deployment, campaign_id, 40 * WEI, dev=True)
    pool = PoolClient(chain, deployment.pool, compiled["CompensationPool"].abi,
                      compiled["TestToken"].abi)
    tag = zlib.crc32(request.node.name.encode())
    holder_keys = ["0x" + f"{tag:08x}{i + 1:056x}" for i in range(2)]
    holders = [address_of(k) for k in holder_keys]
    for address in holders:
        chain.set_eth_balance(address, WEI)
    amounts = [3 * WEI + 7, 5 * WEI]
    paths = _synthetic_round(run_dir, 1, [0.5, 0.5], holders)
    write_json(paths.decision, {"round_id": 1, "policy": "fixed",
                                "budget_wei": wei_str(sum(amounts)), "weights": [0.5, 0.5]})
    tree = PayoutTree.build([(i, a, w) for i, (a, w) in enumerate(zip(holders, amounts,
                                                                      strict=True))])
    write_json(paths.tree, tree.to_json())
    write_json(paths.allocation, {
        "round_id": 1, "budget_wei": wei_str(sum(amounts)), "holder_cap_wei": None,
        "total_wei": wei_str(sum(amounts)), "merkle_root": tree.root, "provenance": PROVENANCE,
        "holders": [{"index": i, "name": f"h{i}", "address": a, "participating": True,
                     "amount_wei": wei_str(w)}
                    for i, (a, w) in enumerate(zip(holders, amounts, strict=True))],
    })
    allocation = RoundAllocation(
        campaign_id=campaign_id, round_id=1, merkle_root=tree.root, total_wei=tree.total_wei,
        signer_set_version=1, deadline=chain.block_timestamp() + HOUR, **PROVENANCE)
    keys = anvil.private_keys
    pool.post_round(keys[2], allocation, sign_round_k_of_n(
        keys[5:5 + settings.oracle_threshold], chain.chain_id, pool.address, allocation))
    chain.increase_time(pool.get_campaign(campaign_id).challenge_window_s + 1)

    on_chain = TestClient(create_app(run_dir, chain_rpc_url=anvil.rpc_url))
    node_only = TestClient(create_app(run_dir))

    def claims(client: TestClient, holder: str) -> dict:
        response = client.get(f"/holders/{holder}/claims")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_claimed(holder: str, timeout_s: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            body = claims(on_chain, holder)
            if body["claimed_source"] == "chain" and body["claims"][0]["claimed"]:
                return body
            assert time.monotonic() < deadline, body
            time.sleep(0.2)

    # before any claim: the chain answers "not claimed"
    deadline = time.monotonic() + 15
    while (body := claims(on_chain, holders[0]))["claimed_source"] != "chain":
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    assert body["claims"][0]["claimed"] is False

    # the holder claims with a direct contract call: no node, no claims.json
    pool.claim(holder_keys[0], campaign_id, 1, 0, holders[0], amounts[0], tree.proof(0))
    assert pool.is_claimed(campaign_id, 1, 0) and not paths.claims.exists()
    body = wait_claimed(holders[0])
    assert body["claims"][0]["claimed_source"] == "chain"
    detail = on_chain.get("/rounds/1").json()
    assert detail["claimed_source"] == "chain"
    assert [h["claimed"] for h in detail["holders"]] == [True, False]
    assert claims(on_chain, holders[1])["claims"][0]["claimed"] is False

    # without an RPC the API says the flag is the node's own record
    fallback = claims(node_only, holders[0])
    assert fallback["claimed_source"] == "node" and fallback["claims"][0]["claimed"] is False

    # a claim through claimRounds (another client's batch call) is seen as well
    from offchain.chain.pool import LeafClaim

    pool.claim_rounds(holder_keys[1], campaign_id, holders[1],
                      [LeafClaim(1, 1, amounts[1], tuple(tree.proof(1)))])
    assert wait_claimed(holders[1])["claims"][0]["claimed"] is True


def test_a_signing_request_written_with_integers_is_served_with_strings(big_round) -> None:
    """A round signed before the rule: the endpoint still answers every uint256 as a string."""
    run_dir, paths = big_round
    request = read_json(paths.signing_request)
    legacy = {k: (v if k in ("merkle_root", "checkpoint_hash", "dataset_root",
                             "attribution_hash") else int(v))
              for k, v in request["allocation"].items()}
    write_json(paths.signing_request, {**request, "allocation": legacy})
    served = TestClient(create_app(run_dir)).get("/rounds/1/signing-request")
    assert served.status_code == 200
    assert unsafe_for_javascript(js_parse(served.text)) == []
    assert served.json() == request


def test_the_claims_watch_reads_the_compiled_contracts_claimed_event(compiled) -> None:
    """The API reads ``Claimed`` logs with a built-in ABI entry (no compiler needed)."""
    from offchain.chain.claims_watch import CLAIMED_EVENT_ABI

    (entry,) = [e for e in compiled["CompensationPool"].abi
                if e.get("type") == "event" and e.get("name") == "Claimed"]
    assert entry == CLAIMED_EVENT_ABI


def test_an_unreachable_rpc_falls_back_to_the_nodes_claims_without_blocking(big_round) -> None:
    run_dir, _ = big_round
    client = TestClient(create_app(run_dir, chain_rpc_url="http://127.0.0.1:1"))
    started = time.monotonic()
    for _ in range(3):
        body = client.get(f"/holders/{ADDRESSES[0]}/claims").json()
        assert body["claimed_source"] == "node" and body["claims"][0]["claimed"] is False
    assert client.get("/rounds/1").json()["claimed_source"] == "node"
    assert time.monotonic() - started < 10  # the chain is read in the background, never inline


def test_an_rpc_of_another_chain_is_not_read_as_nothing_claimed(anvil, big_round) -> None:
    """The deployment file says chain 1; the RPC (anvil) is 31337: no chain view is served."""
    run_dir, _ = big_round
    _deployment(run_dir, chain_id=1)
    client = TestClient(create_app(run_dir, chain_rpc_url=anvil.rpc_url))
    chain_claims = client.app.state.chain_claims
    watch = chain_claims.watch(run_dir / "deployment.json")
    assert watch.wait_synced() is None and "chain 31337" in watch.last_error
    assert client.get(f"/holders/{ADDRESSES[0]}/claims").json()["claimed_source"] == "node"
