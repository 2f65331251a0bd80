"""Request and response bodies of the API (pydantic models; their class names are the OpenAPI
schema names).

Amounts are decimal strings of wei (JSON numbers lose precision above 2⁵³ in JavaScript).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from offchain.api.holders_store import RegisteredHolder

__all__ = [
    "CampaignDetail",
    "CampaignRound",
    "CampaignSummary",
    "Claimable",
    "ClaimedSource",
    "HolderClaims",
    "HolderPayment",
    "JobOut",
    "ManifestRegistrationIn",
    "RegisteredHolderOut",
    "RegistrationOut",
    "RoundDetail",
    "RoundSignature",
    "RoundSummary",
    "RunRoundIn",
    "SignatureIn",
    "SignatureOut",
]


# ---------------------------------------------------------------------------------------------
# Rounds and claims
# ---------------------------------------------------------------------------------------------


class RoundSummary(BaseModel):
    round_id: int
    status: str
    budget_wei: str
    merkle_root: str | None
    tx_hash: str | None


ClaimedSource = Literal["chain", "node"]
"""Where a ``claimed`` flag comes from: ``chain`` (the pool's ``Claimed`` events, whoever sent
the claim; at most a few seconds old) or ``node`` (only the claims this node relayed, its
``claims.json``: the API has no RPC, or the chain did not answer)."""


class HolderPayment(BaseModel):
    index: int
    name: str
    address: str
    participating: bool
    amount_wei: str
    claimed: bool | None
    """None for a holder paid 0 wei (no leaf to claim)."""
    licence: str | None = None
    """SPDX id of the licence of the holder's works (the round's ``manifest.json``), None when
    not stated (the MNIST demo)."""
    attribution: str | None = None
    """The credit text that licence requires, None when not stated."""


class RoundSignature(BaseModel):
    signer: str
    signature: str


class RoundDetail(RoundSummary):
    round_status: str | None
    """pending / submitted / challengeable / finalized / revoked from the state database; None
    without a database (or a round it does not know)."""
    provenance: dict[str, str] | None
    """``checkpoint_hash``, ``dataset_root``, ``attribution_hash`` of ``allocation.json``."""
    policy: str
    digest: str | None
    """The EIP-712 digest the oracle signers signed (``signature.json``), None before signing."""
    signatures: list[RoundSignature]
    """The k-of-n signatures ``postRound`` was sent with, ascending signer address."""
    threshold: int | None
    """Signatures the campaign requires (deployment file), None without one."""
    claimed_source: ClaimedSource
    holders: list[HolderPayment]


class Claimable(BaseModel):
    round_id: int
    index: int
    account: str
    amount_wei: str
    proof: list[str]
    merkle_root: str
    claimed: bool
    claimed_source: ClaimedSource


class HolderClaims(BaseModel):
    address: str
    total_wei: str
    """Sum of ``amount_wei`` over ``claims`` (claimed or not)."""
    claimed_source: ClaimedSource
    claims: list[Claimable]


# ---------------------------------------------------------------------------------------------
# Holder registration
# ---------------------------------------------------------------------------------------------


class RegisteredHolderOut(BaseModel):
    """A holder in the public listing; its reservation price stays private (not listed)."""

    address: str
    name: str
    n_images: int


class RegistrationOut(RegisteredHolderOut):
    """The answer to the holder's own registration (which states its price)."""

    reservation_price_wei: str
    image_sha256: list[str]
    images_root: str

    @classmethod
    def of(cls, stored: RegisteredHolder) -> RegistrationOut:
        """The answer to a registration that was stored."""
        return cls(
            address=stored.address,
            name=stored.name,
            reservation_price_wei=str(stored.reservation_price_wei),
            n_images=stored.n_images,
            image_sha256=list(stored.image_sha256),
            images_root=stored.images_root or "",
        )


class ManifestRegistrationIn(BaseModel):
    """``POST /holders/manifest``'s JSON body: the signed fields of an upload, the images'
    SHA-256 hashes and the server-side folder holding them."""

    model_config = ConfigDict(extra="forbid")

    address: str
    name: str
    reservation_price_wei: str
    """Decimal string of wei."""
    issued_at: int | str
    """Unix seconds (the signed ``issued_at``)."""
    signature: str
    image_sha256: list[str]
    """Hex SHA-256 of each image file (64 hex digits)."""
    source_dir: str
    """Absolute path, on the server's machine, inside an allowed root."""
    replace: bool = False


# ---------------------------------------------------------------------------------------------
# Campaign status
# ---------------------------------------------------------------------------------------------


class CampaignRound(BaseModel):
    round_id: int
    status: str
    """pending / submitted / challengeable / finalized / revoked (from the database, else from
    the round's artifacts)."""
    status_source: str
    """``database`` or ``artifacts``."""
    stages: dict[str, str | None]
    """Stage key → started / done / failed, None if never begun (all None without a database)."""
    merkle_root: str | None
    budget_wei: str | None
    tx_hash: str | None


class CampaignSummary(BaseModel):
    campaign_id: int
    chain_id: int
    pool: str
    token: str | None
    signers: list[str]
    threshold: int | None
    total_budget_wei: str | None
    round_cap_wei: str | None
    holder_cap_wei: str | None
    challenge_window_s: int | None
    rounds: int


class CampaignDetail(CampaignSummary):
    round_states: list[CampaignRound]


# ---------------------------------------------------------------------------------------------
# Co-signing
# ---------------------------------------------------------------------------------------------


class SignatureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signature: str
    """0x + 65 bytes hex: the EIP-712 signature of the round's ``digest``."""


class SignatureOut(BaseModel):
    round_id: int
    signer: str
    digest: str
    stored: bool
    """False when the same signature was posted before."""
    collected: int
    """Valid signatures of the digest collected so far (database, any origin)."""
    threshold: int | None


# ---------------------------------------------------------------------------------------------
# Operator jobs
# ---------------------------------------------------------------------------------------------


class JobOut(BaseModel):
    job_id: str
    action: str
    round_id: int | None
    state: str
    """running / succeeded / failed."""
    exit_code: int | None
    started_at: float
    finished_at: float | None
    args: list[str]
    """``run-round``'s arguments."""
    output_tail: str
    """The last 8,000 characters of the job's stdout and stderr."""


class RunRoundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    round_id: int | None = None
    """The round to run; None: the next unfinished one."""
