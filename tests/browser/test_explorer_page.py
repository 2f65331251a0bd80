"""The round explorer (``GET /explorer/rounds/{id}``, routers/explorer.py) in a real Chromium on
the real tiny campaign (anvil, two posted and final rounds, nothing claimed): every holder with
the allocation's numbers, the images served by the node and loaded, each provenance link
answering with the artifact that really hashes to the commitment (recomputed here with the
project's own functions), the deployment's signers, keyboard use and a 375 px screen, and a
clear 404 page for a round that does not exist."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from offchain.api.routers.pages import format_tokens
from offchain.data.holders import image_hash
from offchain.utils import read_json, sha256_file
from tests.browser.support import PHONE

ROUNDS = (1, 2)
FOCUSABLE = "a[href], button, input, select, textarea, [tabindex]:not([tabindex='-1'])"


def _round_dir(campaign, round_id: int) -> Path:
    return campaign.run_dir / f"round_{round_id:03d}"


def _holder_rows(page) -> list[dict]:  # noqa: ANN001 (a Playwright Page)
    return page.eval_on_selector_all(
        "table.holders tbody tr",
        """rows => rows.map(r => ({index: Number(r.dataset.index), wei: r.dataset.amountWei,
             cells: [...r.cells].map(c => c.innerText.trim()),
             title: r.querySelector('td.amount').title}))""",
    )


@pytest.mark.parametrize("round_id", ROUNDS)
def test_explorer_shows_every_holder_with_the_allocations_numbers(
        campaign_api, campaign, new_page, doc_screenshot, round_id):
    folder = _round_dir(campaign, round_id)
    allocation = read_json(folder / "allocation.json")
    shares = read_json(folder / "contributions.json")["normalized"]
    losses = read_json(folder / "copyright.json")["loss"]
    page = new_page()
    response = page.goto(f"{campaign_api.base_url}/explorer/rounds/{round_id}")
    assert response is not None and response.status == 200
    assert page.title().startswith(f"Round {round_id}")
    rows = _holder_rows(page)
    assert [r["index"] for r in rows] == [h["index"] for h in allocation["holders"]]
    for row, holder, share, loss in zip(rows, allocation["holders"], shares, losses, strict=True):
        number, name, address, contribution, copyright_loss, payment, claimed = row["cells"]
        assert (name, address) == (holder["name"], holder["address"])
        assert row["wei"] == holder["amount_wei"] and row["title"] == f"{holder['amount_wei']} wei"
        assert payment.splitlines()[0] == format_tokens(int(holder["amount_wei"]))
        assert f"{holder['amount_wei']} wei" in payment
        assert contribution == f"{100 * share:.2f} %"
        assert copyright_loss == f"{loss:.3g}"
        assert claimed == ("no" if int(holder["amount_wei"]) else "–")  # nothing claimed yet
    assert page.inner_text("#merkle-root") == allocation["merkle_root"]
    assert page.inner_text("#budget") == f"{format_tokens(int(allocation['budget_wei']))} tokens"
    assert page.inner_text("#round-status").startswith("finalized")
    signers = page.eval_on_selector_all("span.signer", "els => els.map(e => e.innerText)")
    assert sorted(signers) == sorted(campaign.deployment["signers"])
    threshold, n = campaign.deployment["threshold"], len(campaign.deployment["signers"])
    assert f"needs {threshold} of {n} oracle signers" in page.inner_text("#threshold")
    finalizes_at = read_json(folder / "submission.json")["finalizes_at"]
    assert f"Unix {finalizes_at}" in page.inner_text("#finalizes-at")
    if round_id == 1:
        doc_screenshot(page, "page_round")


def test_images_are_served_by_the_node_and_load(campaign_api, campaign, new_page):
    page = new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{campaign_api.base_url}/explorer/rounds/1")
    page.wait_for_load_state("networkidle")
    images = page.eval_on_selector_all(
        "ol.grid img", "imgs => imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    samples = np.load(_round_dir(campaign, 1) / "samples.npy")
    assert len([s for s, _, _ in images if "/generated/" in s]) == min(len(samples), 16)
    assert any("/works/" in s for s, _, _ in images)
    for src, complete, width in images:
        assert complete and width > 0, src
    side = samples.shape[-1]
    assert {w for s, _, w in images if "/generated/" in s} == {side}  # served at its own size
    assert all(urlsplit(u).hostname == "127.0.0.1" for u in requests), requests
    # Upscaled with nearest-neighbour, not blurred.
    rendering = page.eval_on_selector("ol.grid img", "i => getComputedStyle(i).imageRendering")
    assert rendering in ("pixelated", "crisp-edges")


def _download(base_url: str, href: str, into: Path) -> Path:
    answer = httpx.get(base_url + href, timeout=10)
    assert answer.status_code == 200, href
    name = href.split("/artifacts/", 1)[1]
    path = into / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(answer.content)
    return path


def _dataset_root(manifest: dict, images: np.ndarray, holder_index: np.ndarray) -> str:
    """The manifest's dataset root recomputed from the training images: each participating
    holder's images_root over its images' hashes, then the root over those, in holder order."""
    roots = []
    for holder in manifest["holders"]:
        if not holder["participating"]:
            continue
        hashes = [image_hash(image) for image in images[holder_index == holder["index"]]]
        assert hashes == holder["image_hashes"], holder["name"]
        roots.append(hashlib.sha256(b"".join(bytes.fromhex(h) for h in hashes)).hexdigest())
    return hashlib.sha256(b"".join(bytes.fromhex(r) for r in roots)).hexdigest()


def test_provenance_links_give_the_artifacts_that_hash_to_the_commitments(
        campaign_api, campaign, new_page, tmp_path):
    from offchain.diffusion.model import checkpoint_hash

    provenance = read_json(_round_dir(campaign, 1) / "allocation.json")["provenance"]
    page = new_page()
    page.goto(f"{campaign_api.base_url}/explorer/rounds/1")
    shown = {}
    for name in provenance:
        shown[name] = page.inner_text(f"#commitment-{name} .value")
        hrefs = page.eval_on_selector_all(
            f"#commitment-{name} a.artifact", "links => links.map(a => a.getAttribute('href'))")
        assert hrefs, name
        for href in hrefs:
            _download(campaign_api.base_url, href, tmp_path)
    assert shown == provenance
    assert "0x" + checkpoint_hash(tmp_path / "checkpoint") == provenance["checkpoint_hash"]
    assert "0x" + sha256_file(tmp_path / "trak" / "scores.npy") == provenance["attribution_hash"]
    root = _dataset_root(read_json(tmp_path / "manifest.json"),
                         np.load(tmp_path / "train_images.npy"),
                         np.load(tmp_path / "holder_index.npy"))
    assert "0x" + root == provenance["dataset_root"]
    # Every link of the artifacts list answers; nothing outside the round is served.
    for href in page.eval_on_selector_all("ul.artifacts a", "ls => ls.map(a => a.getAttribute('href'))"):
        assert httpx.head(campaign_api.base_url + href, timeout=10).status_code in (200, 405), href
    for bad in ("../deployment.json", "..%2Fdeployment.json", "trak/member_m0_s1/scores.npy"):
        assert httpx.get(f"{campaign_api.base_url}/rounds/1/artifacts/{bad}").status_code == 404


def test_explorer_fits_375px_and_works_with_the_keyboard(campaign_api, new_page):
    page = new_page(PHONE)
    page.goto(f"{campaign_api.base_url}/explorer/rounds/1")
    widths = page.evaluate(
        "() => ({doc: document.documentElement.scrollWidth, body: document.body.scrollWidth})")
    assert widths["doc"] <= PHONE["width"] and widths["body"] <= PHONE["width"], widths
    # Tab reaches every link and the scrollable holders table in document order, each visibly.
    expected = page.eval_on_selector_all(FOCUSABLE, "els => els.map(e => e.outerHTML)")
    assert any("table-scroll" in e for e in expected)
    for html in expected:
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.outerHTML") == html
        outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", html
    # The holders table is wider than the phone: it scrolls sideways inside its own region,
    # with the keyboard.
    table = page.eval_on_selector("div.table-scroll", "d => [d.scrollWidth, d.clientWidth]")
    assert table[0] > table[1], table
    page.focus("div.table-scroll")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('div.table-scroll').scrollLeft > 0")


def test_rounds_page_links_each_round_to_its_explorer(campaign_api, new_page):
    page = new_page()
    page.goto(campaign_api.base_url + "/")
    with page.expect_navigation():
        page.click("table.rounds a[href='/explorer/rounds/2']")
    assert page.url == f"{campaign_api.base_url}/explorer/rounds/2"
    assert page.inner_text("h2").startswith("Round 2")


def test_a_round_that_does_not_exist_is_a_clear_404_page(campaign_api, new_page):
    page = new_page()
    response = page.goto(f"{campaign_api.base_url}/explorer/rounds/99")
    assert response is not None and response.status == 404
    message = page.inner_text("[role=alert]")
    assert "Round 99 does not exist" in message
    with page.expect_navigation():
        page.click("text=See the rounds there are")
    assert page.url == campaign_api.base_url + "/"
