"""Dataset registry: a dataset is one function plus one registry call, and the quality stage's
held-out images and the holder splits load it by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from offchain.data.datasets import dataset_names, get_dataset, load_dataset, register_dataset
from offchain.data.holders import image_hash
from offchain.data.splits import dataset_holders
from offchain.errors import ConfigError
from offchain.quality import held_out_images


def toy_stripes() -> tuple[np.ndarray, np.ndarray]:
    """40 distinct 6×6 images in 4 classes: class c has a bright row c, image i a gray level i."""
    images = np.zeros((40, 6, 6), dtype=np.uint8)
    labels = np.arange(40, dtype=np.int64) % 4
    for i, cls in enumerate(labels):
        images[i] = 5 * i
        images[i, cls] = 255
    return images, labels


register_dataset("toy_stripes", toy_stripes)


def test_a_registered_toy_dataset_is_listed_split_and_held_out_by_name() -> None:
    assert "toy_stripes" in dataset_names()
    assert get_dataset("toy_stripes") is toy_stripes
    holders = dataset_holders("toy_stripes", n_holders=2, sizes=(3, 4))
    assert [h.n_images for h in holders] == [3, 4]
    held_out, labels = held_out_images(holders, "toy_stripes")  # the quality stage's path
    assert held_out.shape == (33, 6, 6) and labels.dtype == np.int64
    owned = {x for h in holders for x in h.image_hashes}
    assert len(owned) == 7 and not owned & {image_hash(image) for image in held_out}


def test_built_in_datasets_are_registered() -> None:
    assert {"mnist", "digits", "lfw", "folders", "emoji"} <= set(dataset_names())


def test_an_unknown_dataset_is_refused_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar'.*'digits'.*'mnist'"):
        get_dataset("cifar")
    with pytest.raises(ConfigError, match="toy_stripes"):
        held_out_images([], "cifar")


def test_a_taken_name_is_refused_for_another_source() -> None:
    register_dataset("toy_stripes", toy_stripes)  # the same source again: nothing changes
    with pytest.raises(ConfigError, match="already registered"):
        register_dataset("mnist", toy_stripes)


def test_holder_folders_load_as_images_labelled_by_holder(tmp_path: Path) -> None:
    for name, count in (("bob", 2), ("alice", 1)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(np.full((10, 10), 40 * i, np.uint8)).save(tmp_path / name / f"{i}.png")
    images, labels = load_dataset("folders", root=tmp_path, image_size=8)
    assert images.shape == (3, 8, 8) and images.dtype == np.uint8
    assert labels.tolist() == [0, 1, 1]  # alice, then bob
    with pytest.raises(ConfigError, match="needs root"):
        load_dataset("folders")


def test_the_data_package_does_not_import_the_quality_package() -> None:
    code = (
        "import sys, offchain.data.datasets, offchain.data.splits; "
        "print(sorted(m for m in sys.modules if m.startswith('offchain.quality')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
