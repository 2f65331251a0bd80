"""A run folder and what a run reads from it: the marker, holders, policy, ML settings, state.

A run folder (``runs/<name>/``) holds a campaign's ``deployment.json``, ``holders.json``, the
rounds (``round_NNN/``, :class:`offchain.layout.RoundPaths`), the FID reference
(``quality_reference/``), what the rounds share (``cache/``: e.g. ``sd-lora``'s VAE latents,
one file per image, reused by every later round) and, by default, the round-state database
(``state.db``). It is marked
with :data:`RUN_MARKER` so that ``demo --fresh`` deletes nothing else.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from offchain.config import HOLDER_SOURCES, Settings
from offchain.data.holders import (
    Holder,
    load_holder_folders,
    manifest_hashes,
    write_dataset_manifest,
)
from offchain.diffusion import get_backend
from offchain.errors import ConfigError
from offchain.policy import BudgetPolicy, make_policy
from offchain.rounds import stages
from offchain.rounds.config import MLConfig
from offchain.utils import read_json, seed_everything

if TYPE_CHECKING:  # the state database (sqlalchemy) is imported when a run opens it
    from offchain.state import RoundStore

__all__ = [
    "OWN_COLOR_IMAGE_SIDE_PX",
    "RUN_MARKER",
    "check_backend",
    "is_run_folder",
    "load_holders",
    "load_run_inputs",
    "open_store",
    "prepare_run_dir",
    "quality_reference_dataset",
]


OWN_COLOR_IMAGE_SIDE_PX = 64
"""Least side in pixels of holders' own colour images for a text-to-image backend (the emoji
artwork's native size): they are loaded at max(this, ``image_size``), so ``sd-lora`` at 256 or
512 px trains on works at its resolution; the backend resizes to its ``image_size``."""

RUN_MARKER = ".ccomp-run"
"""File that marks a folder as a run folder this project created; ``demo --fresh`` deletes
only such folders (and older run folders, see :func:`is_run_folder`)."""

_RUN_ENTRY = re.compile(
    r"(deployment\.json|holders\.json|payments\.png|quality_reference|cache|round_\d+"
    r"|state\.db(-wal|-shm|-journal)?|\..+\.tmp)"
)
"""Top-level entries a run writes (``.<name>.*.tmp``: an atomic write cut short by a crash)."""


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a folder a run of this project created: it holds :data:`RUN_MARKER`,
    or (a run folder of a version before the marker) it holds ``deployment.json`` or
    ``holders.json`` and nothing but entries a run writes (``round_NNN/``, ``state.db``,
    ``payments.png``, ``quality_reference/``, ``cache/``). Any other file makes it not a run
    folder."""
    if not path.is_dir() or path.is_symlink():
        return False
    if (path / RUN_MARKER).is_file():
        return True
    names = [entry.name for entry in path.iterdir()]
    return bool({"deployment.json", "holders.json"} & set(names)) and all(
        _RUN_ENTRY.fullmatch(name) for name in names
    )


def prepare_run_dir(run_dir: Path, fresh: bool) -> None:
    """Make ``run_dir`` a marked run folder; with ``fresh``, empty it first.

    A missing or empty folder is created and marked; a run folder (:func:`is_run_folder`) is
    deleted first with ``fresh``, else kept (and marked). Call it only after every input is
    validated, so that a refusal loses nothing.

    Raises:
        ConfigError: ``run_dir`` is a file or a symbolic link, or a non-empty folder that is not
            a run folder (nothing is deleted: choose another folder or empty it yourself).
    """
    if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
        raise ConfigError(f"run folder {run_dir} is a file or a symbolic link; choose a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not is_run_folder(run_dir):
            raise ConfigError(
                f"{run_dir} is not empty and is not a run folder (no {RUN_MARKER} marker); "
                "nothing was deleted: choose another --run-dir or empty it yourself"
            )
        if fresh:
            shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_MARKER).write_text("created by python -m offchain (a run folder)\n")


def check_backend(settings: Settings) -> None:
    """Refuse, before anything is written, a model backend the settings cannot build: the
    backend's ``from_settings`` of the run's :class:`MLConfig` (``sd-lora`` without
    ``model_path``), or a ``model_path`` that is not a folder.

    Raises:
        ConfigError: naming the setting.
    """
    ml = MLConfig.from_settings(settings, progress=False)
    get_backend(ml.backend).from_settings(ml)
    if ml.model_path is not None and not Path(ml.model_path).is_dir():
        raise ConfigError(f"model_path {ml.model_path} is not a folder (the {ml.backend} "
                          "backend reads a local diffusers model folder)")


def load_run_inputs(
    settings: Settings, holders: list[Holder] | None = None
) -> tuple[list[Holder], BudgetPolicy, MLConfig, object | None]:
    """Holders (``holders``, else :func:`load_holders`), policy, ML settings and FID reference
    of a run (the reference is prepared once per run folder); writes or checks
    ``<run_dir>/holders.json``.

    Raises:
        ConfigError: the holders differ from those the run folder started with, or the model
            backend cannot be built (:func:`check_backend`).
        DataError: the holders cannot be loaded.
    """
    run_dir = Path(settings.run_dir)
    check_backend(settings)
    seed_everything(settings.seed)
    holders = holders if holders is not None else load_holders(settings)
    policy = make_policy(settings.policy, seed=settings.seed)
    ml = MLConfig.from_settings(settings)
    manifest = run_dir / "holders.json"
    if manifest.exists():
        known = read_json(manifest)["manifest_hash"]
        if known not in manifest_hashes(holders):
            raise ConfigError(
                f"the holders differ from those {run_dir} started with (holders.json); a "
                "campaign keeps its holders: use a new run directory for new ones"
            )
    else:
        write_dataset_manifest(holders, manifest)
    quality_dataset = quality_reference_dataset(settings)
    quality_reference = (
        stages.prepare_quality_reference(run_dir, holders, quality_dataset, ml)
        if quality_dataset
        else None
    )
    return holders, policy, ml, quality_reference


def quality_reference_dataset(settings: Settings) -> str | None:
    """The shipped dataset the FID reference classifier learns from, or None (no quality stage).

    ``settings.quality_reference``, except ``none``; with own images (``holders_dir``) only
    when set explicitly, since they are unlike the shipped datasets.
    """
    if settings.quality_reference == "none":
        return None
    own_images = settings.holders_dir is not None
    if own_images and "quality_reference" not in settings.model_fields_set:
        return None
    return settings.quality_reference


def load_holders(settings: Settings) -> list[Holder]:
    """The campaign's holders: the user's folders (``holders_dir``: RGB at max(64,
    ``image_size``) px for a text-to-image backend, 28×28 grayscale for ``ddpm``), else those of
    ``settings.dataset`` (:data:`offchain.config.HOLDER_SOURCES`: the shipped MNIST split, or
    the emoji artists × categories).

    Raises:
        DataError: the holders cannot be loaded (a bad folder, missing emoji packages …).
    """
    if settings.holders_dir is not None:
        if get_backend(settings.backend).conditional:
            # A text-to-image backend models colour: holders' folders keep theirs (composited
            # on white), at least the emoji artwork's native 64 px, at the model's side when
            # larger (sd-lora); the model resizes them.
            side = max(OWN_COLOR_IMAGE_SIDE_PX, settings.image_size)
            return load_holder_folders(settings.holders_dir, image_size=side, channels=3)
        # The grayscale ddpm: 28 px grayscale as before, so running campaigns keep their hashes.
        return load_holder_folders(settings.holders_dir)
    return HOLDER_SOURCES[settings.dataset](settings)


def open_store(settings: Settings) -> RoundStore:
    """The round-state database of the run, migrated to the newest schema.

    ``settings.state_url``, or SQLite at ``<run_dir>/state.db`` (:mod:`offchain.state`).
    """
    # sqlalchemy and alembic load only when a run opens its database
    from offchain.state import RoundStore, default_url, make_engine, upgrade

    url = settings.state_url or default_url(settings.run_dir)
    upgrade(url)
    return RoundStore(make_engine(url))
