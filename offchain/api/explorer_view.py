"""The round explorer's data: one round's holders, provenance commitments, signers, challenge
window and image grid, read from its artifacts once per version of them; its images encoded as
PNG on the server; and the allow-list of artifacts anyone may download to recompute the round's
commitments.

Every piece is optional: a round folder with only ``allocation.json`` (a round the node did not
run itself, or one still in progress) is shown with what it has, the rest marked as not written.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from offchain.allocation import parse_wei
from offchain.api.rounds_view import (
    FileKey,
    VersionedCache,
    artifact_status,
    file_key,
    read_deployment,
    round_ids,
    round_status,
)
from offchain.layout import RoundPaths
from offchain.utils import read_json

__all__ = [
    "ARTIFACT_FILES",
    "COMMITMENT_SOURCES",
    "Commitment",
    "ExplorerCache",
    "ExplorerRound",
    "GridRow",
    "HolderRow",
    "ImageCache",
    "ImageNotFound",
    "Signer",
    "WorkRef",
    "artifact_names",
    "artifact_path",
    "format_tokens",
    "load_explorer_round",
    "render_png",
    "utc_text",
]

ARTIFACT_FILES = (
    "manifest.json", "train_captions.json", "train_images.npy", "holder_index.npy",
    "prompts.json", "samples.npy", "generations.png", "trak/meta.json", "trak/scores.npy",
    "contributions.json", "copyright_probes.npz", "copyright.json",
    "copyright_calibration.json", "quality.json", "decision.json", "allocation.json",
    "tree.json", "signing_request.json", "signature.json", "submission.json", "finality.json",
    "claims.json",
)
"""The round's files served read-only at ``/rounds/{id}/artifacts/{name}`` (where they exist),
besides every regular file under ``checkpoint/``. Nothing else of the round folder (the TRAK
features, temporary files) and nothing outside it is ever served."""

COMMITMENT_SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "checkpoint_hash": (
        "SHA-256 over the lines \"<file name> <SHA-256 of the file>\\n\" of the UNet's weight "
        "files (checkpoint/unet/*.safetensors, *.bin), sorted by name: the trained model's "
        "weights (offchain.diffusion.checkpoint_hash for the ddpm backend).",
        ("checkpoint/unet/diffusion_pytorch_model.safetensors",),
    ),
    "dataset_root": (
        "SHA-256 over the participating holders' images_root (manifest.json, in holder order); "
        "each images_root is the SHA-256 over the holder's image hashes, and each image hash is "
        "SHA-256(b\"<H>x<W>:\" + the uint8 pixels) of a training image (train_images.npy, its "
        "holder in holder_index.npy).",
        ("manifest.json", "train_images.npy", "holder_index.npy"),
    ),
    "attribution_hash": (
        "SHA-256 of the attribution scores file trak/scores.npy (float32, generated images × "
        "training images), from which contributions.json's per-holder shares are computed.",
        ("trak/scores.npy",),
    ),
}
"""Each provenance commitment of ``allocation.json``: how it is computed, and the artifacts that
let anyone recompute it (paths relative to the round folder)."""

GRID_GENERATIONS = 16
"""At most this many generated images are shown in the grid (the first ones)."""
GRID_WORKS = 4
"""Each generated image is shown next to this many training works: those with the highest
attribution scores, or without scores the first works of each holder."""
IMAGE_CACHE_ENTRIES = 4096
"""Encoded PNGs kept in memory (each a few hundred bytes for 16 px images)."""

class ImageNotFound(LookupError):
    """The round has no such image (no such array, holder or work number)."""


@dataclass(frozen=True)
class HolderRow:
    """One holder of the round.

    Attributes:
        contribution: normalized contribution share in [0, 1] (contributions.json), or None.
        contribution_raw: the attributor's raw per-holder score, or None.
        copyright_loss: calibrated expected copyright loss (copyright.json ``loss``), or None.
        amount_wei: payment (decimal string of wei); ``amount_tokens`` the same in tokens.
        n_works: this holder's images in the training set (0 when not participating or unknown).
    """

    index: int
    name: str
    address: str
    participating: bool
    contribution: float | None
    contribution_raw: float | None
    copyright_loss: float | None
    amount_wei: str
    amount_tokens: str
    n_works: int


@dataclass(frozen=True)
class Commitment:
    """A provenance commitment: its value, how it is computed, the artifacts to recompute it
    from (only those the round has), and whether the signed allocation carries the same value."""

    name: str
    value: str
    computed_from: str
    artifacts: tuple[str, ...]
    signed: bool | None


@dataclass(frozen=True)
class Signer:
    """An oracle signature of the round: the signer and whether it is in the deployment's set
    (None: no deployment file)."""

    address: str
    signature: str
    in_signer_set: bool | None


@dataclass(frozen=True)
class WorkRef:
    """A training image: its holder, its number among that holder's works, and its attribution
    score for the generated image it is shown next to (None without scores)."""

    holder: int
    holder_name: str
    work: int
    score: float | None


@dataclass(frozen=True)
class GridRow:
    """A generated image (number ``sample``, its prompt where the backend has prompts) and the
    training works shown next to it."""

    sample: int
    prompt: str | None
    works: tuple[WorkRef, ...]


@dataclass(frozen=True)
class ExplorerRound:
    """Everything the explorer page shows of a round except the claim flags (read per request
    from the chain or ``claims.json``).

    Times are Unix seconds and ISO-8601 UTC strings; amounts decimal strings of wei.
    """

    round_id: int
    status: str
    artifact_status: str
    budget_wei: str
    budget_tokens: str
    total_wei: str | None
    merkle_root: str | None
    policy: str | None
    holders: tuple[HolderRow, ...]
    commitments: tuple[Commitment, ...]
    digest: str | None
    signers: tuple[Signer, ...]
    signature_deadline: int | None
    post_tx: str | None
    finalizes_at: int | None
    finalizes_at_utc: str | None
    finality_tx: str | None
    grid: tuple[GridRow, ...]
    grid_ranked: bool
    n_generated: int
    n_train: int
    artifacts: tuple[str, ...]
    paid: tuple[int, ...]
    """Indices of the holders paid a positive amount (those with a claim flag)."""


def utc_text(seconds: int | None) -> str | None:
    """Unix ``seconds`` as ``YYYY-MM-DD HH:MM:SS UTC`` (None for None)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _optional_json(path: Path) -> dict[str, Any]:
    """``path`` parsed, or {} when it does not exist."""
    return read_json(path) if path.is_file() else {}


def artifact_names(paths: RoundPaths) -> tuple[str, ...]:
    """The round's downloadable artifacts that exist: :data:`ARTIFACT_FILES` and every regular
    file under ``checkpoint/`` (no symlinks), as paths relative to the round folder, sorted."""
    names = [name for name in ARTIFACT_FILES if (paths.dir / name).is_file()]
    if paths.checkpoint.is_dir():
        for path in paths.checkpoint.rglob("*"):
            if path.is_file() and not path.is_symlink():
                names.append(path.relative_to(paths.dir).as_posix())
    return tuple(sorted(names))


def artifact_path(paths: RoundPaths, name: str, allowed: tuple[str, ...]) -> Path | None:
    """The file of artifact ``name`` (a path relative to the round folder) if it is one of
    ``allowed`` (:func:`artifact_names`) and still resolves inside the round folder; else None."""
    if name not in allowed:
        return None
    path = paths.dir / name
    try:
        resolved = path.resolve(strict=True)
        inside = resolved.is_relative_to(paths.dir.resolve(strict=True))
    except (OSError, RuntimeError):
        return None
    return resolved if inside and resolved.is_file() else None


def format_tokens(wei: int) -> str:
    """``wei`` in whole tokens, exact: :func:`offchain.api.routers.pages.format_tokens` (the
    rounds page's), imported here on use (the routers package imports this module)."""
    from offchain.api.routers.pages import format_tokens as tokens

    return tokens(wei)


def _holder_rows(paths: RoundPaths, allocation: dict[str, Any],
                 holder_index: np.ndarray | None) -> tuple[HolderRow, ...]:
    contributions = _optional_json(paths.contributions)
    copyright_ = _optional_json(paths.copyright)
    normalized = contributions.get("normalized") or []
    raw = contributions.get("raw") or []
    loss = copyright_.get("loss") or []
    counts = np.bincount(holder_index) if holder_index is not None and holder_index.size else []
    rows = []
    for position, h in enumerate(allocation["holders"]):
        index = int(h["index"])
        amount = parse_wei(h["amount_wei"], "amount_wei")
        rows.append(HolderRow(
            index=index,
            name=str(h["name"]),
            address=str(h["address"]),
            participating=bool(h.get("participating", True)),
            contribution=float(normalized[position]) if position < len(normalized) else None,
            contribution_raw=float(raw[position]) if position < len(raw) else None,
            copyright_loss=float(loss[position]) if position < len(loss) else None,
            amount_wei=str(amount),
            amount_tokens=format_tokens(amount),
            n_works=int(counts[index]) if index < len(counts) else 0,
        ))
    return tuple(rows)


def _commitments(paths: RoundPaths, allocation: dict[str, Any], signed: dict[str, Any],
                 artifacts: tuple[str, ...]) -> tuple[Commitment, ...]:
    provenance = allocation.get("provenance") or {}
    signed_values = signed.get("allocation") or {}
    out = []
    for name, (how, sources) in COMMITMENT_SOURCES.items():
        if not provenance.get(name):
            continue
        value = str(provenance[name])
        files = tuple(s for s in sources if s in artifacts)
        if name == "checkpoint_hash":  # every weight file the hash covers, as the round has them
            files = tuple(a for a in artifacts if a.startswith("checkpoint/unet/")
                          and a.endswith((".safetensors", ".bin")))
        in_signed = signed_values.get(name)
        out.append(Commitment(name=name, value=value, computed_from=how, artifacts=files,
                              signed=None if in_signed is None else in_signed == value))
    return tuple(out)


def _signers(signed: dict[str, Any], deployment: dict[str, Any] | None) -> tuple[Signer, ...]:
    if "signatures" in signed:
        pairs = list(zip(signed.get("signers") or [], signed["signatures"], strict=False))
    elif signed.get("signature"):
        pairs = [(signed.get("signer") or "", signed["signature"])]
    else:
        pairs = []
    known = None
    if deployment is not None and deployment.get("signers") is not None:
        known = {str(a).lower() for a in deployment["signers"]}
    return tuple(
        Signer(address=a, signature=s, in_signer_set=None if known is None else a.lower() in known)
        for a, s in pairs
    )


def _works_of(holder_index: np.ndarray) -> np.ndarray:
    """For each training image, its number among its holder's works (0, 1, … in order)."""
    order = np.zeros(holder_index.shape, dtype=np.int64)
    seen: dict[int, int] = {}
    for j, h in enumerate(holder_index.tolist()):
        order[j] = seen.get(h, 0)
        seen[h] = order[j] + 1
    return order


def _grid(paths: RoundPaths, holder_index: np.ndarray | None, n_generated: int,
          names: dict[int, str]) -> tuple[tuple[GridRow, ...], bool]:
    """The image grid: each of the first :data:`GRID_GENERATIONS` generated images next to the
    :data:`GRID_WORKS` training works with the highest attribution scores (``ranked`` True), or
    without a usable ``trak/scores.npy`` next to the first work of the first holders."""
    if holder_index is None or n_generated == 0:
        return (), False
    prompts_file = _optional_list(paths.prompts)
    works = _works_of(holder_index)
    scores_file = paths.trak_dir / "scores.npy"
    scores = np.load(scores_file, allow_pickle=False) if scores_file.is_file() else None
    ranked = scores is not None and scores.shape == (n_generated, holder_index.size)
    rows = []
    for k in range(min(n_generated, GRID_GENERATIONS)):
        if ranked:
            top = np.argsort(-scores[k], kind="stable")[:GRID_WORKS]
            refs = tuple(WorkRef(int(holder_index[j]), names.get(int(holder_index[j]), ""),
                                 int(works[j]), float(scores[k, j])) for j in top)
        else:
            firsts = [j for j in range(holder_index.size) if works[j] == 0][:GRID_WORKS]
            refs = tuple(WorkRef(int(holder_index[j]), names.get(int(holder_index[j]), ""),
                                 0, None) for j in firsts)
        prompt = str(prompts_file[k]) if k < len(prompts_file) else None
        rows.append(GridRow(sample=k, prompt=prompt, works=refs))
    return tuple(rows), ranked


def _optional_list(path: Path) -> list[Any]:
    data = read_json(path) if path.is_file() else []
    return data if isinstance(data, list) else []


def _array_shape(path: Path) -> tuple[int, ...] | None:
    """Shape of the ``.npy`` file at ``path`` without reading its data (None if missing)."""
    if not path.is_file():
        return None
    return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)


def load_explorer_round(paths: RoundPaths, deployment: dict[str, Any] | None) -> ExplorerRound:
    """Read round ``paths`` for the explorer (every artifact optional but ``allocation.json``).

    Raises:
        FileNotFoundError: no ``allocation.json``.
        WeiFormatError: an amount of ``allocation.json`` is not a wei amount.
        ValueError, KeyError: an artifact is malformed.
    """
    allocation = read_json(paths.allocation)
    signed = _optional_json(paths.signature)
    submission = _optional_json(paths.submission)
    finality = _optional_json(paths.finality)
    decision = _optional_json(paths.decision)
    artifacts = artifact_names(paths)
    holder_index = (np.load(paths.holder_index, allow_pickle=False).astype(np.int64)
                    if paths.holder_index.is_file() else None)
    samples_shape = _array_shape(paths.samples)
    n_generated = samples_shape[0] if samples_shape else 0
    holders = _holder_rows(paths, allocation, holder_index)
    grid, ranked = _grid(paths, holder_index, n_generated, {h.index: h.name for h in holders})
    budget = parse_wei(allocation["budget_wei"], "budget_wei")
    finalizes_at = submission.get("finalizes_at")
    deadline = (signed.get("allocation") or {}).get("deadline")
    return ExplorerRound(
        round_id=paths.round_id,
        status=round_status(paths),
        artifact_status=artifact_status(paths),
        budget_wei=str(budget),
        budget_tokens=format_tokens(budget),
        total_wei=None if allocation.get("total_wei") is None else str(allocation["total_wei"]),
        merkle_root=allocation.get("merkle_root"),
        policy=decision.get("policy"),
        holders=holders,
        commitments=_commitments(paths, allocation, signed, artifacts),
        digest=signed.get("digest"),
        signers=_signers(signed, deployment),
        signature_deadline=None if deadline is None else int(deadline),
        post_tx=submission.get("tx_hash"),
        finalizes_at=None if finalizes_at is None else int(finalizes_at),
        finalizes_at_utc=utc_text(None if finalizes_at is None else int(finalizes_at)),
        finality_tx=finality.get("tx_hash"),
        grid=grid,
        grid_ranked=ranked,
        n_generated=n_generated,
        n_train=0 if holder_index is None else int(holder_index.size),
        artifacts=artifacts,
        paid=tuple(h.index for h in holders if int(h.amount_wei) > 0),
    )


def _version(paths: RoundPaths, deployment_file: Path | None) -> tuple[FileKey, ...]:
    """The round's explorer version: the :data:`~offchain.api.rounds_view.FileKey` of each of
    :data:`ARTIFACT_FILES` (what it reads or lists: a new ``claims.json`` adds a download link),
    of ``checkpoint/unet`` and of the deployment file (signer set)."""
    keys = tuple(file_key(paths.dir / name) for name in ARTIFACT_FILES)
    return keys + (file_key(paths.checkpoint / "unet"),
                   None if deployment_file is None else file_key(deployment_file))


class ExplorerCache:
    """:class:`ExplorerRound` of each round, read again only when one of its artifacts (or the
    deployment file) changed (about 24 ``stat`` calls per request otherwise)."""

    def __init__(self) -> None:
        self._rounds: VersionedCache[tuple[FileKey, ...], ExplorerRound] = VersionedCache()

    def get(self, paths: RoundPaths, deployment: dict[str, Any] | None,
            deployment_file: Path | None) -> ExplorerRound:
        """The round's explorer data (see :func:`load_explorer_round` for the errors)."""
        return self._rounds.get(paths.dir, _version(paths, deployment_file),
                                lambda: load_explorer_round(paths, deployment))

    def warm(self, run_dir: Path, deployment_file: Path | None,
             images: ImageCache | None = None) -> int:
        """Read every round of ``run_dir`` whose artifacts changed (and, with ``images``, encode
        the PNGs its grid shows), so a posted round's page is ready before anyone asks for it;
        return how many rounds were read. A round that fails to read is skipped here (its page
        request gets the error)."""
        stale = [(paths, version) for paths in (RoundPaths(run_dir, r) for r in round_ids(run_dir))
                 if not self._rounds.is_current(paths.dir,
                                                version := _version(paths, deployment_file))]
        if not stale:  # the common case on every scan: no JSON read at all
            return 0
        deployment = read_deployment(deployment_file)
        read = 0
        for paths, version in stale:
            try:
                data = self._rounds.get(paths.dir, version,
                                        lambda p=paths: load_explorer_round(p, deployment))
                if images is not None:
                    images.warm(paths, data)
            except (OSError, ValueError, KeyError, TypeError, ImageNotFound):
                continue
            read += 1
        return read


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """A generated sample (C, S, S) float in [-1, 1] as uint8 (S, S) or (S, S, 3)."""
    pixels = np.clip((np.asarray(image, dtype=np.float32) + 1.0) * 127.5 + 0.5, 0, 255)
    pixels = pixels.astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[0] in (1, 3):
        pixels = pixels[0] if pixels.shape[0] == 1 else np.transpose(pixels, (1, 2, 0))
    return pixels


def render_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image, grayscale (H, W) or RGB (H, W, 3).

    Raises:
        ValueError: another dtype or shape.
    """
    from PIL import Image

    if pixels.dtype != np.uint8 or not (
        pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)
    ):
        raise ValueError(f"need uint8 (H, W) or (H, W, 3), got {pixels.dtype} {pixels.shape}")
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format="PNG", optimize=False)
    return out.getvalue()


class ImageCache:
    """The round's images as PNG bytes, encoded once per version of the array they come from
    (at most :data:`IMAGE_CACHE_ENTRIES` kept, least recently used dropped first).

    ``generated(paths, k)``: generated sample ``k`` of ``samples.npy``;
    ``work(paths, holder, k)``: the ``k``-th training image of holder ``holder``
    (``train_images.npy`` rows whose ``holder_index.npy`` is ``holder``, in order).
    Both raise :class:`ImageNotFound` for a missing array or an index out of range.
    """

    def __init__(self, max_entries: int = IMAGE_CACHE_ENTRIES) -> None:
        self._lock = threading.Lock()
        self._png: OrderedDict[tuple, bytes] = OrderedDict()
        self.max_entries = max_entries

    def __len__(self) -> int:
        """How many encoded PNGs are kept."""
        return len(self._png)

    def _cached(self, key: tuple, encode: Any) -> bytes:
        with self._lock:
            if key in self._png:
                self._png.move_to_end(key)
                return self._png[key]
        png = encode()
        with self._lock:
            self._png[key] = png
            while len(self._png) > self.max_entries:
                self._png.popitem(last=False)
        return png

    def warm(self, paths: RoundPaths, data: ExplorerRound) -> None:
        """Encode every image the round's explorer grid shows (``data.grid``)."""
        for row in data.grid:
            self.generated(paths, row.sample)
            for work in row.works:
                self.work(paths, work.holder, work.work)

    def generated(self, paths: RoundPaths, k: int) -> bytes:
        version = file_key(paths.samples)
        if version is None:
            raise ImageNotFound(f"round {paths.round_id} has no generated images")

        def encode() -> bytes:
            samples = np.load(paths.samples, mmap_mode="r", allow_pickle=False)
            if not 0 <= k < samples.shape[0]:
                raise ImageNotFound(
                    f"round {paths.round_id} has {samples.shape[0]} generated images, no {k}")
            return render_png(_to_uint8(samples[k]))

        return self._cached(("generated", version, k), encode)

    def work(self, paths: RoundPaths, holder: int, k: int) -> bytes:
        version = (file_key(paths.train_images), file_key(paths.holder_index))
        if None in version:
            raise ImageNotFound(f"round {paths.round_id} has no training images")

        def encode() -> bytes:
            index = np.load(paths.holder_index, allow_pickle=False)
            rows = np.flatnonzero(index == holder)
            if not 0 <= k < rows.size:
                raise ImageNotFound(f"round {paths.round_id}: holder {holder} has {rows.size} "
                                    f"works in the training set, no {k}")
            images = np.load(paths.train_images, mmap_mode="r", allow_pickle=False)
            return render_png(np.asarray(images[rows[k]]))

        return self._cached(("work", version, holder, k), encode)
