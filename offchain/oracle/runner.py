"""Runs a round's stages in pipeline order and records each in the round-state database.

:class:`RoundRunner` binds every stage of :data:`offchain.rounds.pipeline.PIPELINE` to its work
(the off-chain functions of :mod:`offchain.rounds.stages`, the chain stages of
:class:`~offchain.oracle.chain_stages.ChainStages`); :class:`RoundLedger` runs a stage unless the
database holds it done, and records it begun, done (with its artifact's SHA-256) or failed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from offchain.allocation import parse_wei
from offchain.config import Settings
from offchain.data.holders import Holder
from offchain.errors import ConfigError, StageError
from offchain.faults import fault_point
from offchain.layout import RoundPaths
from offchain.oracle.chain_stages import ChainStages, claim_all
from offchain.policy import BudgetPolicy
from offchain.policy.participation import stays_next_round
from offchain.rounds import stages
from offchain.rounds.config import MLConfig
from offchain.rounds.pipeline import ALWAYS_OUTPUT, PIPELINE, STAGE_KEYS, bind_stages
from offchain.utils import read_json, sha256_file

if TYPE_CHECKING:  # the state database (sqlalchemy) is imported when a run opens it
    from offchain.state import RoundStore

__all__ = ["RoundLedger", "RoundRunner", "RoundStep", "artifact_sha256"]


def artifact_sha256(path: Path) -> str:
    """Hex SHA-256 of an artifact: a file's bytes, or for a folder the SHA-256 of its sorted
    ``<relative path>\0<file SHA-256>\n`` lines (hidden temporaries excluded)."""
    if path.is_file():
        return sha256_file(path)
    lines = [
        f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n"
        for file in sorted(path.rglob("*"))
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(path).parts)
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class RoundStep:
    """One stage of a round bound to its work: its stable key (:data:`~offchain.rounds.pipeline.
    STAGE_KEYS`), a display label, the work, and the artifact whose SHA-256 the database records
    (None: nothing to hash)."""

    key: str
    label: str
    run: Callable[[], object]
    output: Path | None


class RoundLedger:
    """A round's record in the state database: each stage begun, finished or failed there.

    A stage the database holds ``done`` is skipped (its artifact must still exist); one left
    ``started`` by a killed process, or ``failed``, runs again, and the stage functions skip
    whatever they already wrote (every artifact is written atomically).
    """

    def __init__(self, store: RoundStore, round_pk: int, round_id: int) -> None:
        self.store, self.round_pk, self.round_id = store, round_pk, round_id

    def run(self, step: RoundStep) -> bool:
        """Run ``step`` unless it is done; True if it ran.

        Raises:
            StageError: the stage is done but its artifact is gone, or another live process is
                running it; whatever the stage raises (the stage is then recorded ``failed``).
        """
        if not self.store.begin_stage(self.round_pk, step.key):
            if step.output is not None and not step.output.exists() and step.key in ALWAYS_OUTPUT:
                raise StageError(
                    f"round {self.round_id}: stage {step.key} is recorded done but {step.output} "
                    "is missing; the run folder was changed by hand"
                )
            return False
        fault_point(f"stage:{step.key}:begun", self.round_id)
        try:
            step.run()
        except BaseException as exc:
            self.store.fail_stage(self.round_pk, step.key, f"{type(exc).__name__}: {exc}")
            raise
        fault_point(f"stage:{step.key}:ran", self.round_id)
        output = step.output if step.output is not None and step.output.exists() else None
        self.store.finish_stage(self.round_pk, step.key,
                                artifact_sha256(output) if output is not None else None)
        return True


@dataclass
class RoundRunner:
    """Everything the rounds of one deployed campaign need; :meth:`run` runs one round.

    Used by :func:`offchain.oracle.campaign.run_campaign` (round after round) and by ``python -m offchain run-round``
    (:func:`offchain.oracle.operations.run_round`, one round per call).
    """

    settings: Settings
    holders: list[Holder]
    policy: BudgetPolicy
    ml: MLConfig
    quality_reference: object | None
    chain: ChainStages
    store: RoundStore
    campaign_pk: int

    @property
    def run_dir(self) -> Path:
        return Path(self.settings.run_dir)

    def participation(self, round_id: int) -> np.ndarray:
        """Holders still in the campaign at ``round_id``: bool (N,), every holder in round 1,
        then each round's decision to stay (:func:`stays_next_round`) over the earlier rounds.

        Raises:
            StageError: an earlier round has no allocation yet.
        """
        participating = np.ones(len(self.holders), dtype=bool)
        prices = [h.reservation_price_wei for h in self.holders]
        for earlier in range(1, round_id):
            paths = RoundPaths(self.run_dir, earlier)
            if not paths.allocation.exists():
                raise StageError(f"round {earlier} is not allocated yet; run it before round "
                                 f"{round_id}")
            amounts = [parse_wei(h["amount_wei"], "amount_wei")
                       for h in read_json(paths.allocation)["holders"]]
            participating = stays_next_round(participating, amounts, prices,
                                             read_json(paths.copyright)["loss"])
        return participating

    def steps(self, paths: RoundPaths, participating: np.ndarray, round_pk: int
              ) -> list[RoundStep]:
        """The round's stages in pipeline order (:data:`~offchain.rounds.pipeline.PIPELINE`;
        quality only with a reference).

        Raises:
            StageBindingError: the work bound here does not match the pipeline's stages.
        """
        ml, chain, settings = self.ml, self.chain, self.settings
        work: dict[str, Callable[[], object] | None] = {
            "prepare": lambda: stages.prepare(paths, self.holders, participating),
            "train": lambda: stages.train(paths, ml),
            "generate": lambda: stages.generate(paths, ml),
            "attribute": lambda: stages.attribute(paths, ml),
            "copyright": lambda: stages.assess_copyright(paths, ml),
            "quality": (
                (lambda: stages.assess_quality(paths, ml, self.quality_reference))
                if self.quality_reference is not None
                else None
            ),
            "policy": lambda: stages.decide(paths, self.policy, settings.n_rounds,
                                            settings.total_budget_wei,
                                            caps=chain.payout_caps()),
            "allocate": lambda: stages.allocate(paths, ml),
            "sign": lambda: chain.sign(paths, self.store, round_pk),
            "submit": lambda: chain.submit(paths, self.store, round_pk),
            "finalize": lambda: chain.finalize(paths, self.store, round_pk),
            "claim": lambda: claim_all(paths, chain.pool, chain.claim_keys, chain.relayer_key),
        }
        return [RoundStep(spec.key, spec.label, run, getattr(paths, spec.artifact))
                for spec, run in bind_stages(PIPELINE, work)]

    def run(self, round_id: int, console: Console, participating: np.ndarray | None = None,
            until: str | None = None) -> RoundPaths:
        """Run (or resume) round ``round_id`` through every stage, or up to and including stage
        ``until`` (a key of :data:`STAGE_KEYS`, e.g. ``sign``); its paths.

        Raises:
            StageError: an earlier round is missing, a stage is running in another process,
                too few oracle signatures (:class:`AwaitingSignatures`), a revoked round.
        """
        if until is not None and until not in STAGE_KEYS:
            raise ConfigError(f"unknown stage {until!r}; choose one of {', '.join(STAGE_KEYS)}")
        paths = RoundPaths(self.run_dir, round_id)
        if participating is None:
            participating = self.participation(round_id)
        round_pk = self.store.ensure_round(self.campaign_pk, round_id)
        ledger = RoundLedger(self.store, round_pk, round_id)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            for step in self.steps(paths, participating, round_pk):
                task = progress.add_task(f"round {round_id}: {step.label}", total=1)
                ran = ledger.run(step)
                progress.update(task, completed=1,
                                description=f"round {round_id}: {step.label}"
                                + ("" if ran else " (done before)"))
                if step.key == until:
                    break
        return paths
