"""The stages of a round, in pipeline order: defined here once (:data:`PIPELINE`), used everywhere.

The off-chain stages are functions of :mod:`offchain.rounds.stages`; the chain stages are the
oracle's (:mod:`offchain.oracle.chain_stages`). The oracle's round runner
(:class:`offchain.oracle.runner.RoundRunner`) and the policy calibration's measured rounds
(:func:`offchain.rounds.measure.measure_rounds`, the stages through ``quality``) bind each key to
its work with :func:`bind_stages`; the round-state database records stages by key, so keys and
labels never change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ALWAYS_OUTPUT",
    "MEASURED_STAGES",
    "PIPELINE",
    "STAGE_KEYS",
    "StageBindingError",
    "StageSpec",
    "bind_stages",
    "stages_through",
]


@dataclass(frozen=True)
class StageSpec:
    """One stage of a round."""

    key: str
    """Stable key, as the round-state database and ``run-round --until`` name the stage."""
    label: str
    """What the progress display shows."""
    artifact: str
    """Name of the :class:`~offchain.layout.RoundPaths` attribute of the artifact whose SHA-256
    the database records when the stage is done."""
    offchain: bool
    """True: a function of :mod:`offchain.rounds.stages`, no chain; False: a chain stage."""
    always_output: bool
    """True: the artifact exists whenever the stage is done (the chain stages write none for a
    round that pays nothing)."""
    optional: bool = False
    """True: the stage runs only when configured (``quality``: only with an FID reference)."""


PIPELINE: tuple[StageSpec, ...] = (
    StageSpec("prepare", "prepare", "manifest", offchain=True, always_output=True),
    StageSpec("train", "train", "checkpoint", offchain=True, always_output=True),
    StageSpec("generate", "generate", "samples", offchain=True, always_output=True),
    StageSpec("attribute", "attribute (TRAK)", "contributions", offchain=True,
              always_output=True),
    StageSpec("copyright", "copyright loss", "copyright", offchain=True, always_output=True),
    StageSpec("quality", "quality (FID)", "quality", offchain=True, always_output=True,
              optional=True),
    StageSpec("policy", "policy", "decision", offchain=True, always_output=True),
    StageSpec("allocate", "allocate + Merkle", "allocation", offchain=True, always_output=True),
    StageSpec("sign", "sign (EIP-712, k-of-n)", "signature", offchain=False,
              always_output=False),
    StageSpec("submit", "submit", "submission", offchain=False, always_output=False),
    StageSpec("finalize", "challenge window", "finality", offchain=False, always_output=False),
    StageSpec("claim", "claims", "claims", offchain=False, always_output=False),
)
"""A round's stages in pipeline order."""

STAGE_KEYS: tuple[str, ...] = tuple(spec.key for spec in PIPELINE)
"""Stable keys of a round's stages in pipeline order, as the state database records them
(``quality`` only runs with an FID reference)."""

ALWAYS_OUTPUT: frozenset[str] = frozenset(spec.key for spec in PIPELINE if spec.always_output)
"""Keys of the stages whose artifact exists whenever they are done."""


class StageBindingError(ValueError):
    """The work bound to a pipeline's stages does not match its keys (a programming error)."""


def stages_through(key: str) -> tuple[StageSpec, ...]:
    """The pipeline's stages from the first through stage ``key``.

    Raises:
        StageBindingError: ``key`` is not a stage key.
    """
    if key not in STAGE_KEYS:
        raise StageBindingError(f"unknown stage {key!r}; stages are {', '.join(STAGE_KEYS)}")
    return PIPELINE[: STAGE_KEYS.index(key) + 1]


MEASURED_STAGES: tuple[StageSpec, ...] = stages_through("quality")
"""The stages of a round the policy calibration measures: the off-chain ones through quality
(no policy, allocation or chain)."""


def bind_stages(
    specs: Sequence[StageSpec], work: Mapping[str, Callable[[], object] | None]
) -> list[tuple[StageSpec, Callable[[], object]]]:
    """Pair each stage of ``specs`` with its work, in pipeline order.

    Args:
        specs: the stages to run (:data:`PIPELINE` or a prefix of it).
        work: stage key → a no-argument callable doing the stage; None for an optional stage
            that is not configured (it is left out).

    Returns:
        (spec, work) of every bound stage, in the order of ``specs``.

    Raises:
        StageBindingError: a key of ``specs`` has no entry in ``work``, ``work`` has a key not in
            ``specs``, or a stage that is not optional is bound to None.
    """
    keys = [spec.key for spec in specs]
    missing = [key for key in keys if key not in work]
    extra = sorted(set(work) - set(keys))
    if missing or extra:
        raise StageBindingError(f"stage bindings differ from the pipeline: missing {missing}, "
                                f"extra {extra}")
    bound = []
    for spec in specs:
        run = work[spec.key]
        if run is None:
            if not spec.optional:
                raise StageBindingError(f"stage {spec.key!r} is not optional but has no work")
            continue
        bound.append((spec, run))
    return bound
