"""Where a round's artifacts live on disk.

``<run_dir>/round_<NNN>/`` holds, in pipeline order::

    manifest.json          participants, holder → image hashes (and licence, attribution where
                           set), dataset root hash, previous checkpoint
    train_images.npy       uint8 (N, H, W) grayscale or (N, H, W, 3) RGB images of the
                           participants, in manifest order
    train_captions.json    JSON list of N strings, the caption of each training image ("" where
                           its holder has none: the image trains the null caption)
    holder_index.npy       int64 (N,) holder index of each training image
    checkpoint/            the model backend's checkpoint (ddpm: diffusers UNet2DModel +
                           DDPMScheduler, save_pretrained)
    prompts.json           (conditional backends) JSON list of M strings: the fixed prompt set
                           the round's generations were sampled from, one per sample
    samples.npy            float32 (M, C, S, S) generated samples in [-1, 1]
    generations.png        grid of the round's generations (with their prompts) next to
                           holders' works
    trak/                  TRAK features and scores (traker save_dir); trak/scores.npy (M, N)
    contributions.json     per-holder raw and normalized contribution
    copyright_probes.npz   (conditional backends) generations from works' captions: float32
                           ``samples`` (P, C, S, S), int64 ``work_index`` (P,) into the
                           training set, int64 ``holder`` (P,)
    copyright.json         per-holder copyright loss (calibrated) and components
    copyright_calibration.json  the round's fitted probability of substantial similarity
    quality.json           FID of the round's model in the reference classifier's feature space
    decision.json          policy name, round budget (wei), holder weights, payout caps applied
    allocation.json        per-holder amount_wei (sums to the budget), tree index, address
    tree.json              OpenZeppelin StandardMerkleTree dump of the payouts
    signing_request.json   the EIP-712 RoundAllocation to sign and its digest (what co-signers sign)
    signature.json         the signed allocation, its digest and the k-of-n oracle signatures
    submission.json        postRound transaction hash and block
    finality.json          the round's status once its challenge window is over (finalize tx)
    claims.json            each holder's claim transaction and balance check

Every artifact is written atomically, so a file that exists is complete; a stage whose outputs
exist is skipped. The stages and the artifact each one records are listed once, in
:data:`offchain.rounds.pipeline.PIPELINE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RoundPaths"]


@dataclass(frozen=True)
class RoundPaths:
    """Artifact paths of round ``round_id`` (1-based) under ``run_dir``."""

    run_dir: Path
    round_id: int

    @property
    def dir(self) -> Path:
        return Path(self.run_dir) / f"round_{self.round_id:03d}"

    @property
    def manifest(self) -> Path:
        return self.dir / "manifest.json"

    @property
    def train_images(self) -> Path:
        return self.dir / "train_images.npy"

    @property
    def train_captions(self) -> Path:
        return self.dir / "train_captions.json"

    @property
    def holder_index(self) -> Path:
        return self.dir / "holder_index.npy"

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint"

    @property
    def prompts(self) -> Path:
        return self.dir / "prompts.json"

    @property
    def samples(self) -> Path:
        return self.dir / "samples.npy"

    @property
    def generations_png(self) -> Path:
        return self.dir / "generations.png"

    @property
    def trak_dir(self) -> Path:
        return self.dir / "trak"

    @property
    def contributions(self) -> Path:
        return self.dir / "contributions.json"

    @property
    def copyright_probes(self) -> Path:
        return self.dir / "copyright_probes.npz"

    @property
    def copyright(self) -> Path:
        return self.dir / "copyright.json"

    @property
    def copyright_calibration(self) -> Path:
        return self.dir / "copyright_calibration.json"

    @property
    def quality(self) -> Path:
        return self.dir / "quality.json"

    @property
    def decision(self) -> Path:
        return self.dir / "decision.json"

    @property
    def allocation(self) -> Path:
        return self.dir / "allocation.json"

    @property
    def tree(self) -> Path:
        return self.dir / "tree.json"

    @property
    def signing_request(self) -> Path:
        return self.dir / "signing_request.json"

    @property
    def signature(self) -> Path:
        return self.dir / "signature.json"

    @property
    def submission(self) -> Path:
        return self.dir / "submission.json"

    @property
    def finality(self) -> Path:
        return self.dir / "finality.json"

    @property
    def claims(self) -> Path:
        return self.dir / "claims.json"

    def previous(self) -> RoundPaths | None:
        """Paths of the round before, or None for round 1."""
        return RoundPaths(self.run_dir, self.round_id - 1) if self.round_id > 1 else None

