"""bench/gpu_sd.py (the prepared GPU run of issue 16 §5) runs to the end with tiny configs on the
CPU and reports every figure it is meant to measure on a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gpu_sd import TINY, fitting_batch, main


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_gpu_sd_bench_runs_tiny_on_the_cpu(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gpu_sd.json"
    results = main(["--tiny", "--batches", "1,2", "--proj-dims", "64,128", "--out", str(out)])
    assert json.loads(out.read_text())["arch"] == "tiny"
    assert [r["batch"] for r in results["project"]] == [1, 2]
    assert [r["batch"] for r in results["reference"]] == [1, 2]
    for row in results["project"] + results["reference"]:
        assert row["images_per_s"] > 0 and row["steps_timed"] == 2
    assert set(results["ratio_project_over_reference"]) == {"1", "2"}
    lora_dim = results["featurize"][0]["grad_dim"]
    assert 0 < lora_dim < results["unet_parameters"] / 10  # the adapters, not the UNet
    for row, proj_dim in zip(results["featurize"], (64, 128), strict=True):
        assert row["proj_dim"] == proj_dim and row["examples_per_s"] > 0
        assert row["projector"] == "matrix" and row["timesteps"] >= 1
    assert results["resolution"] == TINY.resolution
    assert "featurize proj_dim    128" in capsys.readouterr().out


def test_featurize_batch_halves_until_p_and_activations_fit() -> None:
    gib = 2**30
    assert fitting_batch(4, 97 * gib, None, None) == (4, None)  # the CPU: no limit
    assert fitting_batch(4, 12 * gib, None, 120 * gib) == (4, None)  # nothing measured yet
    # SD 1.5's LoRA at proj_dim 32768: P 97 GiB; 10 GiB of activations per example measured
    assert fitting_batch(4, 97 * gib, (40 * gib, 4), 126 * gib) == (2, None)
    fit, why = fitting_batch(4, 97 * gib, (120 * gib, 4), 126 * gib)
    assert fit == 0 and "activations (30.0 GiB)" in why
    fit, why = fitting_batch(4, 130 * gib, None, 126 * gib)
    assert fit == 0 and "P needs 130.0 GiB" in why
