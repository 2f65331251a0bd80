"""The round explorer's data and routes (offchain/api/explorer_view.py, routers/explorer.py) on
a small synthetic round with every artifact the explorer reads: the holders' shares, losses and
payments, the image grid ranked by attribution scores, PNGs that decode to the arrays' pixels,
the artifact allow-list (no path outside the round, no symlink, nothing unlisted), the cache per
artifact version, the 404 page, and the offline /docs page."""

from __future__ import annotations

import html
import io
import os

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bench.api_load import build_run_dir
from offchain.api import explorer_view
from offchain.api.app import create_app
from offchain.api.explorer_view import (
    ExplorerCache,
    ImageCache,
    ImageNotFound,
    artifact_names,
    artifact_path,
    load_explorer_round,
)
from offchain.api.routers import docs
from offchain.api.routers.pages import format_tokens
from offchain.layout import RoundPaths
from offchain.utils import read_json, write_json, write_npy

HOLDERS = 3
WORKS = (2, 0, 3)  # holder 1 does not participate: no works in the training set
SAMPLES = 5


def _full_round(run_dir):
    """Round 1 of a 3-holder synthetic run with the ML and chain artifacts the explorer reads."""
    build_run_dir(run_dir, rounds=1, holders=HOLDERS, seed=5)
    paths = RoundPaths(run_dir, 1)
    allocation = read_json(paths.allocation)
    allocation["holders"][1]["participating"] = False
    allocation["provenance"] = {"checkpoint_hash": "0x" + "11" * 32,
                                "dataset_root": "0x" + "22" * 32,
                                "attribution_hash": "0x" + "33" * 32}
    write_json(paths.allocation, allocation)
    rng = np.random.default_rng(0)
    holder_index = np.repeat(np.arange(HOLDERS), WORKS).astype(np.int64)
    write_npy(paths.holder_index, holder_index)
    write_npy(paths.train_images, rng.integers(0, 256, (holder_index.size, 6, 6), dtype=np.uint8))
    write_npy(paths.samples, rng.uniform(-1, 1, (SAMPLES, 1, 4, 4)).astype(np.float32))
    scores = np.zeros((SAMPLES, holder_index.size), dtype=np.float32)
    scores[:, 4] = 3.0  # holder 2's work 2 first, then holder 0's work 1
    scores[:, 1] = 2.0
    write_npy(paths.trak_dir / "scores.npy", scores)
    write_json(paths.contributions, {"raw": [0.5, 0.0, 0.25], "normalized": [0.75, 0.0, 0.25]})
    write_json(paths.copyright, {"loss": [1e-4, 0.0, 2e-4]})
    (paths.checkpoint / "unet").mkdir(parents=True)
    (paths.checkpoint / "unet" / "model.safetensors").write_bytes(b"weights")
    signed = {**allocation["provenance"], "deadline": "99"}
    write_json(paths.signature, {"allocation": signed, "digest": "0x" + "44" * 32,
                                 "signers": ["0xAa00000000000000000000000000000000000001"],
                                 "signatures": ["0x" + "55" * 65]})
    write_json(paths.submission, {"tx_hash": "0x" + "66" * 32, "finalizes_at": 1_800_000_000})
    write_json(run_dir / "deployment.json", {
        "chain_id": 31337, "pool": "0x" + "77" * 20, "campaign_id": 1, "threshold": 1,
        "signers": ["0xaa00000000000000000000000000000000000001"], "challenge_window_s": 3600})
    return paths


def test_explorer_round_has_each_holders_share_loss_payment_and_works(tmp_path):
    paths = _full_round(tmp_path)
    data = load_explorer_round(paths, read_json(tmp_path / "deployment.json"))
    allocation = read_json(paths.allocation)
    assert [h.amount_wei for h in data.holders] == [h["amount_wei"] for h in allocation["holders"]]
    assert [h.amount_tokens for h in data.holders] == [
        format_tokens(int(h["amount_wei"])) for h in allocation["holders"]]
    assert [h.contribution for h in data.holders] == [0.75, 0.0, 0.25]
    assert [h.copyright_loss for h in data.holders] == [1e-4, 0.0, 2e-4]
    assert [h.n_works for h in data.holders] == list(WORKS)
    assert [h.participating for h in data.holders] == [True, False, True]
    assert data.status == "claimed" and data.artifact_status == "challengeable"  # claims.json
    assert [s.in_signer_set for s in data.signers] == [True]
    assert all(c.signed for c in data.commitments)
    assert data.commitments[0].artifacts == ("checkpoint/unet/model.safetensors",)
    assert data.n_generated == SAMPLES and data.n_train == sum(WORKS)


def test_grid_shows_each_generation_next_to_its_highest_scored_works(tmp_path):
    data = load_explorer_round(_full_round(tmp_path), None)
    assert data.grid_ranked and len(data.grid) == SAMPLES
    first = data.grid[0].works
    assert [(w.holder, w.work, w.score) for w in first[:2]] == [(2, 2, 3.0), (0, 1, 2.0)]
    assert len(first) == explorer_view.GRID_WORKS


def test_round_with_only_an_allocation_is_shown_with_what_it_has(tmp_path):
    build_run_dir(tmp_path, rounds=1, holders=4, seed=3)
    data = load_explorer_round(RoundPaths(tmp_path, 1), None)
    assert len(data.holders) == 4 and all(h.contribution is None for h in data.holders)
    assert data.grid == () and data.signers == () and data.commitments == ()
    assert data.artifacts == ("allocation.json", "claims.json", "tree.json")


def test_pngs_decode_to_the_arrays_pixels_and_are_encoded_once(tmp_path):
    paths = _full_round(tmp_path)
    cache = ImageCache()
    images = np.load(paths.train_images)
    png = cache.work(paths, 2, 1)  # holder 2's second work: training row 3
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), images[3])
    assert cache.work(paths, 2, 1) is png
    samples = np.load(paths.samples)
    decoded = np.asarray(Image.open(io.BytesIO(cache.generated(paths, 4)))).astype(int)
    expected = np.clip((samples[4, 0] + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(decoded, expected)
    for bad in (lambda: cache.generated(paths, SAMPLES), lambda: cache.work(paths, 1, 0),
                lambda: cache.work(paths, 0, 2)):
        with pytest.raises(ImageNotFound):
            bad()


def test_artifacts_are_allow_listed_and_never_outside_the_round(tmp_path):
    paths = _full_round(tmp_path)
    (paths.trak_dir / "features.npy").write_bytes(b"not served")
    secret = tmp_path / "secret.txt"
    secret.write_text("key")
    os.symlink(secret, paths.checkpoint / "unet" / "link.bin")
    names = artifact_names(paths)
    assert "checkpoint/unet/model.safetensors" in names and "trak/scores.npy" in names
    assert "trak/features.npy" not in names and "checkpoint/unet/link.bin" not in names
    for name in ("../deployment.json", "trak/features.npy", "checkpoint/unet/link.bin",
                 "/etc/passwd", "round_001/allocation.json"):
        assert artifact_path(paths, name, names) is None
    assert artifact_path(paths, "tree.json", names) == paths.tree.resolve()
    client = TestClient(create_app(tmp_path))
    assert client.get("/rounds/1/artifacts/trak/scores.npy").content == (
        paths.trak_dir / "scores.npy").read_bytes()
    for url in ("/rounds/1/artifacts/..%2Fdeployment.json", "/rounds/1/artifacts/%2e%2e/x",
                "/rounds/1/artifacts/checkpoint/unet/link.bin", "/rounds/2/artifacts/tree.json",
                "/rounds/1/artifacts/trak/features.npy"):
        assert client.get(url).status_code == 404, url


def test_cache_reads_a_round_again_only_when_an_artifact_changed(tmp_path):
    paths = _full_round(tmp_path)
    cache = ExplorerCache()
    first = cache.get(paths, None, None)
    assert cache.get(paths, None, None) is first
    write_json(paths.copyright, {"loss": [0.5, 0.0, 0.5]})
    assert [h.copyright_loss for h in cache.get(paths, None, None).holders] == [0.5, 0.0, 0.5]


def test_explorer_page_shows_the_round_and_a_missing_round_is_a_404_page(tmp_path):
    paths = _full_round(tmp_path)
    client = TestClient(create_app(tmp_path))
    page = client.get("/explorer/rounds/1")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for h in read_json(paths.allocation)["holders"]:
        assert h["address"] in page.text and f"{h['amount_wei']} wei" in page.text
    assert "/rounds/1/images/generated/0.png" in page.text
    assert "/rounds/1/images/works/2/2.png" in page.text
    assert 'href="/rounds/1/artifacts/trak/scores.npy"' in page.text
    assert 'href="/static/explorer.css"' in page.text
    assert "the pool needs 1 of 1 oracle signers" in page.text
    assert client.get("/rounds/1/images/works/2/2.png").headers["content-type"] == "image/png"
    assert client.get("/rounds/1/images/works/1/0.png").status_code == 404
    for missing in (2, 0, -3):
        gone = client.get(f"/explorer/rounds/{missing}")
        assert gone.status_code == 404
        assert f"Round {missing} does not exist" in gone.text
    assert 'href="/explorer/rounds/1"' in client.get("/").text


def test_explorer_page_escapes_what_it_shows(tmp_path):
    paths = _full_round(tmp_path)
    allocation = read_json(paths.allocation)
    allocation["holders"][0]["name"] = "<script>alert(1)</script>"
    write_json(paths.allocation, allocation)
    page = TestClient(create_app(tmp_path)).get("/explorer/rounds/1").text
    assert "<script>alert" not in page and html.escape("<script>alert(1)</script>") in page


def test_docs_page_loads_swagger_ui_from_this_node_only(tmp_path, monkeypatch):
    client = TestClient(create_app(tmp_path))
    assert client.get("/redoc").status_code == 404
    if all((docs.SWAGGER_DIR / name).is_file() for name in docs.SWAGGER_FILES):
        page = client.get("/docs")
        assert page.status_code == 200
        assert "https://" not in page.text and "http://" not in page.text
        for name in docs.SWAGGER_FILES:
            assert f"/static/dist/swagger/{name}" in page.text
            assert client.get(f"/static/dist/swagger/{name}").status_code == 200
    monkeypatch.setattr(docs, "SWAGGER_DIR", tmp_path / "not-built")
    missing = client.get("/docs")
    assert missing.status_code == 503 and "node scripts/build_web.mjs" in missing.text


def test_warming_reads_each_changed_round_once_and_encodes_its_grid(tmp_path):
    paths = _full_round(tmp_path)
    cache, images = ExplorerCache(), ImageCache()
    deployment_file = tmp_path / "deployment.json"
    assert cache.warm(tmp_path, deployment_file, images) == 1
    assert cache.warm(tmp_path, deployment_file, images) == 0  # nothing changed
    shown = cache.get(paths, read_json(deployment_file), deployment_file).grid
    encoded = len(images)
    assert encoded == len({("g", r.sample) for r in shown}
                          | {("w", w.holder, w.work) for r in shown for w in r.works})
    write_json(paths.contributions, {"raw": [0.0, 0.0, 1.0], "normalized": [0.0, 0.0, 1.0]})
    assert cache.warm(tmp_path, deployment_file, images) == 1


def test_page_is_rendered_again_when_a_claim_changes_and_gzip_is_the_same_html(tmp_path):
    paths = _full_round(tmp_path)
    client = TestClient(create_app(tmp_path))

    def claimed_cells(**headers) -> list[str]:
        page = client.get("/explorer/rounds/1", headers=headers)
        assert page.headers["vary"] == "Accept-Encoding"
        encoding = "gzip" if headers["Accept-Encoding"] == "gzip" else None
        assert page.headers.get("content-encoding") == encoding
        cells = page.text.split('<td class="claimed">')[1:]
        return [cell.split("</td>", 1)[0] for cell in cells]

    plain = claimed_cells(**{"Accept-Encoding": "identity"})
    assert claimed_cells(**{"Accept-Encoding": "gzip"}) == plain  # httpx decodes the gzip
    claims = read_json(paths.claims)
    paid = [h["index"] for h in read_json(paths.allocation)["holders"] if h["amount_wei"] != "0"]
    write_json(paths.claims, {**claims, "claims": [{"index": i, "ok": True} for i in paid]})
    assert claimed_cells(**{"Accept-Encoding": "gzip"}) == [
        "yes" if h["amount_wei"] != "0" else "–" for h in read_json(paths.allocation)["holders"]]


def test_the_pages_warmer_renders_each_rounds_page_before_any_request(tmp_path):
    from offchain.api.routers.explorer import warm_explorer
    from offchain.api.routers.pages import _PAGE_WARMERS

    paths = _full_round(tmp_path)
    assert warm_explorer in _PAGE_WARMERS  # called by the pages router's lifespan and warmer
    app = create_app(tmp_path)
    assert warm_explorer(app) == 2  # round 1 read, its page rendered
    assert warm_explorer(app) == 0  # nothing changed: nothing read or rendered
    with TestClient(app) as client:  # the lifespan runs the warmers
        assert client.get("/explorer/rounds/1").status_code == 200
    assert warm_explorer(app) == 0  # the request was answered with the warmed page
    write_json(paths.copyright, {"loss": [0.0, 0.0, 0.0]})
    assert warm_explorer(app) == 2
