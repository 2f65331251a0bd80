"""Where a round's artifacts live on disk.

``<run_dir>/round_<NNN>/`` holds, in pipeline order::

    manifest.json          participants, holder → image hashes, dataset root hash, previous checkpoint
    train_images.npy       uint8 (N, H, W) images of the participants, in manifest order
    holder_index.npy       int64 (N,) holder index of each training image
    checkpoint/            diffusers UNet2DModel + DDPMScheduler (save_pretrained)
    samples.npy            float32 (M, 1, S, S) generated samples in [-1, 1]
    trak/                  TRAK features and scores (traker save_dir); trak/scores.npy (M, N)
    contributions.json     per-holder raw and normalized contribution
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
    def holder_index(self) -> Path:
        return self.dir / "holder_index.npy"

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint"

    @property
    def samples(self) -> Path:
        return self.dir / "samples.npy"

    @property
    def trak_dir(self) -> Path:
        return self.dir / "trak"

    @property
    def contributions(self) -> Path:
        return self.dir / "contributions.json"

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

