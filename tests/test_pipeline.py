"""The round pipeline is defined once (offchain.rounds.pipeline) and everything agrees with it:
the runner's and the calibration sweep's bindings, the artifact layout, and the docs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from offchain.config import Settings
from offchain.layout import RoundPaths
from offchain.oracle.runner import RoundRunner
from offchain.rounds import measure
from offchain.rounds.pipeline import (
    ALWAYS_OUTPUT,
    MEASURED_STAGES,
    PIPELINE,
    STAGE_KEYS,
    StageBindingError,
    bind_stages,
    stages_through,
)

ROOT = Path(__file__).resolve().parents[1]
PATHS = RoundPaths(Path("run"), 1)


def test_stage_keys_and_labels_are_the_ones_the_state_database_records() -> None:
    assert STAGE_KEYS == (
        "prepare", "train", "generate", "attribute", "copyright", "quality", "policy",
        "allocate", "sign", "submit", "finalize", "claim",
    )
    assert [s.label for s in PIPELINE] == [
        "prepare", "train", "generate", "attribute (TRAK)", "copyright loss", "quality (FID)",
        "policy", "allocate + Merkle", "sign (EIP-712, k-of-n)", "submit", "challenge window",
        "claims",
    ]
    assert ALWAYS_OUTPUT == {s.key for s in PIPELINE if s.offchain}
    assert [s.key for s in PIPELINE if s.optional] == ["quality"]
    assert [s.key for s in MEASURED_STAGES] == list(STAGE_KEYS[:6])


def test_every_stage_names_an_artifact_of_the_round_layout() -> None:
    for spec in PIPELINE:
        assert isinstance(getattr(PATHS, spec.artifact), Path), spec


def test_binding_refuses_missing_extra_and_empty_required_work() -> None:
    work = {key: (lambda: None) for key in STAGE_KEYS}
    assert [s.key for s, _ in bind_stages(PIPELINE, work)] == list(STAGE_KEYS)
    assert "quality" not in [s.key for s, _ in bind_stages(PIPELINE, {**work, "quality": None})]
    with pytest.raises(StageBindingError, match=r"missing \['claim'\]"):
        bind_stages(PIPELINE, {k: v for k, v in work.items() if k != "claim"})
    with pytest.raises(StageBindingError, match=r"extra \['deploy'\]"):
        bind_stages(PIPELINE, {**work, "deploy": lambda: None})
    with pytest.raises(StageBindingError, match="'train' is not optional"):
        bind_stages(PIPELINE, {**work, "train": None})
    with pytest.raises(StageBindingError, match="unknown stage"):
        stages_through("deploy")


@pytest.mark.parametrize("with_quality", [False, True])
def test_round_runner_binds_every_stage_in_pipeline_order(with_quality: bool) -> None:
    runner = RoundRunner(Settings(), [], None, None, object() if with_quality else None,  # type: ignore[arg-type]
                         None, None, 1)  # type: ignore[arg-type]
    steps = runner.steps(PATHS, np.ones(0, dtype=bool), round_pk=1)
    assert [s.key for s in steps] == [k for k in STAGE_KEYS if with_quality or k != "quality"]
    for step, spec in zip(steps, (s for s in PIPELINE if with_quality or not s.optional),
                          strict=True):
        assert (step.label, step.output) == (spec.label, getattr(PATHS, spec.artifact))


def test_calibration_sweep_measures_the_pipeline_through_quality() -> None:
    steps = measure._measure_steps(PATHS, [], np.ones(0, dtype=bool), None, None)  # type: ignore[arg-type]
    assert [key for key, _ in steps] == [s.key for s in MEASURED_STAGES]


def _positions(text: str, names: list[str]) -> list[int]:
    found = []
    for name in names:
        match = re.search(rf"`?{re.escape(name)}\b", text)
        assert match is not None, f"{name} is not mentioned"
        found.append(match.start())
    return found


def test_docs_list_the_stages_and_their_artifacts_in_pipeline_order() -> None:
    """docs/state.md lists the stage keys; the README's "What happens in a round" table and the
    layout's docstring name each stage's artifact, in pipeline order."""
    state = (ROOT / "docs" / "state.md").read_text()
    listed = re.search(r"`STAGE_KEYS`: ([a-z, \n]+)\)", state)
    assert listed is not None
    assert tuple(k.strip() for k in listed.group(1).split(",")) == STAGE_KEYS

    artifacts = [getattr(PATHS, spec.artifact).name for spec in PIPELINE]
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## What happens in a round"):]
    table = table[: table.index("\n## ")]
    positions = _positions(table, artifacts)
    assert positions == sorted(positions), artifacts

    layout = RoundPaths.__module__
    doc = __import__(layout, fromlist=["__doc__"]).__doc__
    positions = _positions(doc, artifacts)
    assert positions == sorted(positions), artifacts
