"""Settings of the oracle node and the demo, from defaults, environment (``CCOMP_*``) or flags.

One settings class, built by :func:`get_settings` and overridable in tests. Two profiles:
``demo`` (the README's main job: 8 MNIST holders, 3 rounds, CPU-sized model) and ``tiny``
(the end-to-end test: the same pipeline with the smallest settings that still exercise it).
Two datasets (:data:`HOLDER_SOURCES`): ``mnist`` (grayscale digits, the unconditional ``ddpm``
backend) and ``emoji`` (captioned color artwork, the text-conditioned ``text-unet`` backend);
a dataset's preset (:data:`DATASET_PRESETS`) sits between the profile's and explicit values.
"""

from __future__ import annotations

import difflib
import io
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from offchain import faults
from offchain.allocation.wei import UINT256_MAX, WEI_PER_TOKEN
from offchain.attribution.base import attributor_names
from offchain.data.datasets import dataset_names
from offchain.data.holders import Holder, mnist_holders
from offchain.diffusion.backend import backend_names
from offchain.errors import ConfigError
from offchain.policy import make_policy
from offchain.rounds.config import MLConfig

__all__ = [
    "BACKEND_PRESETS",
    "DATASET_PRESETS",
    "ENV_PREFIX",
    "HOLDER_SOURCES",
    "PROJECT_ROOT",
    "Settings",
    "check_env_file",
    "get_settings",
    "one_line",
    "settings_from",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "CCOMP_"
_ML = MLConfig()
"""The ML defaults are :class:`offchain.rounds.config.MLConfig`'s (defined once, there)."""


class Settings(BaseSettings):
    """Everything a campaign run needs; every number carries its unit in its name or doc."""

    model_config = SettingsConfigDict(env_prefix="CCOMP_", extra="forbid")

    profile: Literal["demo", "tiny"] = "demo"
    """Size preset: ``demo`` for the README job, ``tiny`` for tests. Its sizes apply to every
    setting not given explicitly (flag, environment, config file), however the settings are
    built (``CCOMP_PROFILE=tiny`` alone is enough)."""
    run_dir: Path = Path("runs/demo")
    """Where round artifacts are written (``round_NNN/`` per round)."""
    dataset: str = "mnist"
    """The holders' source when no ``holders_dir`` is given, a name in :data:`HOLDER_SOURCES`:
    ``mnist`` (the shipped MNIST split, grayscale) or ``emoji`` (Noto and Twemoji artwork,
    artist × category, RGB with captions). Its preset (:data:`DATASET_PRESETS`: for ``emoji``
    the ``text-unet`` backend, 32 px, the ``emoji`` quality reference) applies to every setting
    not given explicitly; it overrides the profile's."""
    holders_dir: Path | None = None
    """Folder of ``<name>/*.png`` image sets, one per holder; None: the holders of ``dataset``."""
    n_holders: int = Field(8, ge=1, le=256)
    """Holders the dataset's split makes (ignored with ``holders_dir``)."""
    holder_sizes: tuple[int, ...] | None = None
    """Images per holder of the dataset's split; None: the profile's default unequal sizes
    (``emoji``: :data:`offchain.data.emoji.DEFAULT_EMOJI_HOLDER_SIZES` for 8 holders)."""
    n_rounds: int = Field(3, ge=1)
    """Rounds T of the campaign."""
    total_budget_wei: int = Field(1500 * WEI_PER_TOKEN, gt=0, le=UINT256_MAX)
    """Campaign budget B in wei of the ERC-20 (18 decimals): 1500 tokens by default."""
    round_cap_wei: int | None = Field(None, gt=0, le=UINT256_MAX)
    """The campaign's on-chain per-round cap ``roundCap`` in wei (largest round total); None:
    the budget B. Rounds are clipped to it (docs/contracts.md, "Caps by construction")."""
    holder_cap_wei: int | None = Field(None, gt=0, le=UINT256_MAX)
    """The on-chain per-holder cap ``holderCap`` in wei (largest payment to one holder in one
    round, ≤ the round cap); None: the round cap. Payments above it go to the other holders."""
    policy: str = "linear/weighted"
    """Budget policy: a baseline ``<upper>/<lower>`` or ``rl:<folder>``, a trained RL policy (see
    :func:`offchain.policy.make_policy`)."""
    seed: int = 0
    """Seed of the split, training, sampling, attribution noise and random policies."""
    n_samples: int = Field(_ML.n_samples, ge=1)
    """Samples generated per round: TRAK targets and copyright-loss probes."""
    image_size: int = Field(_ML.image_size, ge=8)
    """Side in pixels the images are resized to for the diffusion model."""
    train_steps: int = Field(_ML.train_steps, ge=1)
    """Optimizer steps per round (continuing from the previous round's checkpoint)."""
    proj_dim: int = Field(_ML.proj_dim, ge=8)
    """TRAK projection dimension."""
    trak_timesteps: int = Field(_ML.trak_timesteps, ge=1)
    """K: timesteps the D-TRAK output function averages over."""
    trak_output: Literal["dtrak", "loss"] = _ML.trak_output  # type: ignore[assignment]
    """TRAK output function: ``dtrak`` (D-TRAK, ‖ε_θ‖²) or ``loss`` (plain TRAK, for comparison)."""
    trak_ensemble: int = Field(_ML.trak_ensemble, ge=1)
    """TRAK ensemble size: independent projection/noise seeds whose scores are averaged."""
    backend: str = _ML.backend
    """Model backend a round trains and samples with (a name in
    :func:`offchain.diffusion.backend_names`; ``ddpm``: the pixel-space DDPM)."""
    attributor: str = _ML.attributor
    """Data attribution method (a name in :func:`offchain.attribution.attributor_names`;
    ``trak``: TRAK with the ``trak_*`` settings)."""
    copyright_encoder: str = _ML.copyright_encoder
    """Semantic encoder of the copyright loss: ``unet`` (the round's own UNet, no download),
    ``torchscript:<path>`` (e.g. SSCD) or ``hf:<path>`` (CLIP/DINO from a local folder)."""
    quality_samples: int = Field(_ML.quality_samples, ge=2)
    """Samples drawn per round for the FID quality metric (docs/quality.md: M ≥ 128)."""
    quality_reference: str = "mnist"
    """Real dataset (a name in the dataset registry, :func:`offchain.data.datasets.dataset_names`:
    ``mnist``, ``digits``, ``lfw``, ``emoji``) whose held-out images (minus every holder's) train the FID
    reference classifier; ``none``: no quality stage (the default with ``holders_dir``: own
    images are unlike the shipped datasets)."""
    quality_classifier_epochs: int = Field(_ML.quality_classifier_epochs, ge=1)
    """Epochs of the FID reference classifier (trained once per run on held-out images)."""
    device: Literal["auto", "cpu", "cuda"] = _ML.device  # type: ignore[assignment]
    """Where training, sampling, attribution, copyright and quality run: ``auto`` (CUDA when
    available, else the CPU), ``cpu`` or ``cuda`` (an error where no CUDA device is)."""
    guidance_scale: float = Field(_ML.guidance_scale, ge=0, allow_inf_nan=False)
    """Classifier-free guidance scale of a text-conditioned backend's sampling (0:
    unconditional, 1: conditional without guidance); the ``ddpm`` backend ignores it."""
    copyright_probes: int = Field(_ML.copyright_probes, ge=1)
    """Works per participating holder regenerated from their captions by the copyright stage of
    a text-conditioned backend (docs/copyright.md); the ``ddpm`` backend ignores it."""
    model_path: Path | None = None
    """Local diffusers Stable Diffusion folder (``model_index.json``, ``unet/``, ``vae/``,
    ``text_encoder/``, ``tokenizer/``, ``scheduler/``) that the ``sd-lora`` backend fine-tunes
    with LoRA; read from disk only, never fetched. Other backends ignore it."""
    train_batch_size: int | None = Field(_ML.train_batch_size, ge=1)
    """Images per training step; None: the backend's own (``ddpm`` 64, ``text-unet`` 32,
    ``sd-lora`` 4). With ``num_processes`` N > 1 it is the global batch and must divide by N."""
    lora_rank: int = Field(_ML.lora_rank, ge=1)
    """r of the ``sd-lora`` backend's LoRA adapters (the paper's 4)."""
    lora_alpha: float = Field(_ML.lora_alpha, gt=0, allow_inf_nan=False)
    """α of the LoRA adapters (update scaled by α / r)."""
    lora_target_modules: tuple[str, ...] = Field(_ML.lora_target_modules, min_length=1)
    """UNet modules that get adapters (JSON list in ``CCOMP_LORA_TARGET_MODULES``; the paper's
    ``to_q, to_k, to_v, to_out.0``)."""
    num_processes: int = Field(_ML.num_processes, ge=1)
    """Processes of the distributed stages (data-parallel training, TRAK featurization): 1 runs
    them in the node's process; N > 1 launches them with ``accelerate launch`` (one per GPU, or
    gloo processes on the CPU). docs/scale-out.md."""
    accelerate_config: Path | None = None
    """An ``accelerate config`` YAML file for the distributed stages (several GPUs, several
    machines: its ``num_machines``, ``machine_rank``, ``main_process_ip``); None: accelerate's
    defaults with ``num_processes``."""
    challenge_window_s: int = Field(3600, ge=0)
    """Seconds a posted round stays revocable by the guardian before holders may claim (on a
    local anvil node the node advances the chain clock past it)."""
    claim_window_s: int = Field(7 * 24 * 3600, gt=0)
    """Seconds claims stay open after the last possible round is final; then sponsors reclaim."""
    posting_window_s: int = Field(30 * 24 * 3600, gt=0)
    """Seconds after campaign creation during which funding and rounds are accepted."""
    signature_ttl_s: int = Field(24 * 3600, gt=0)
    """Lifetime of a round's signatures (the signed ``deadline`` is signing time + this)."""
    rpc_url: str | None = None
    """JSON-RPC endpoint; None starts a local anvil node for the run."""
    confirmations: int = Field(1, ge=1)
    """Blocks that must include or follow a transaction's block before it counts as done (1: the
    receipt is enough; keep 1 on an automining anvil node, where blocks come only with
    transactions)."""
    oracle_keys: list[SecretStr] | None = None
    """Oracle signer private keys (JSON list in ``CCOMP_ORACLE_KEYS``); None on a local anvil
    node: its dev accounts 5, 6 and 7."""
    oracle_signers: list[str] | None = None
    """The campaign's oracle signer addresses (JSON list in ``CCOMP_ORACLE_SIGNERS``) when they
    are not all this node's keys (k-of-n with co-signers on other machines); None: the
    addresses of the local signer keys. Used when a campaign is created."""
    oracle_threshold: int = Field(2, ge=1)
    """Signatures k needed per round (k-of-n over ``oracle_keys``)."""
    sponsor_key: SecretStr | None = None
    """Sponsor private key; None on a local anvil node: its dev account 2."""
    keystore_dir: Path | None = None
    """Folder of encrypted oracle keystores (``offchain keys new``); replaces ``oracle_keys``."""
    keystore_password_file: Path | None = None
    """File holding the keystore password (mode 600); None: ``CCOMP_KEYSTORE_PASSWORD``."""
    guardian: str | None = None
    """Guardian address (may revoke pending rounds); None: the sponsor."""
    state_url: str | None = None
    """Round-state database (SQLAlchemy URL, e.g. ``postgresql+psycopg://…``); None: SQLite at
    ``<run_dir>/state.db`` (docs/state.md)."""
    cosign_wait_s: float = Field(0.0, ge=0)
    """Seconds the sign stage waits for co-signers' signatures (posted to the API) when the
    local keys are fewer than the threshold; 0: fail at once, run the round again later."""
    api_token: SecretStr | None = None
    """Bearer token of the operator endpoints of ``serve`` (at least 32 characters, not a
    placeholder); None: the operator endpoints are off."""
    solc_path: str | None = None
    """Explicit Solidity compiler; None: native solc from py-solc-x, else npm solcjs."""
    anvil_path: Path | None = None
    """The anvil executable of a local chain; None: the npm toolchain's, then ``PATH``."""
    keystore_password: SecretStr | None = None
    """Keystore password when no ``keystore_password_file`` is given (never logged)."""
    fault_kill: str | None = None
    """Tests only: the fault point (``[<round>/]<point>``) where the process kills itself with
    SIGKILL (:mod:`offchain.faults`, the kill -9 suite); None in every real run."""

    @model_validator(mode="before")
    @classmethod
    def _environment_and_profile(cls, data: Any) -> Any:
        """Refuse unknown ``CCOMP_*`` environment variables; fill in the profile's presets."""
        check_environment(os.environ)
        if not isinstance(data, dict):
            return data
        profile = data.get("profile", "demo")
        if profile not in _PROFILES:
            raise ConfigError(f"unknown profile {profile!r}; choose one of {sorted(_PROFILES)}")
        dataset = data.get("dataset", "mnist")
        if dataset not in HOLDER_SOURCES:
            raise ConfigError(
                f"unknown dataset {dataset!r}; choose one of {', '.join(HOLDER_SOURCES)}"
            )
        preset = {**_PROFILES[profile], **DATASET_PRESETS[dataset].get(profile, {})}
        backend = data.get("backend", preset.get("backend"))
        return {**preset, **BACKEND_PRESETS.get(str(backend), {}), **data}

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        make_policy(value)  # raises ConfigError naming the choices
        return value

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in backend_names():
            raise ConfigError(f"unknown backend {value!r}; choose one of {backend_names()}")
        return value

    @field_validator("attributor")
    @classmethod
    def _known_attributor(cls, value: str) -> str:
        if value not in attributor_names():
            raise ConfigError(f"unknown attributor {value!r}; choose one of {attributor_names()}")
        return value

    @field_validator("quality_reference")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value not in (*dataset_names(), "none"):
            raise ConfigError(
                f"unknown quality_reference {value!r}; choose one of "
                f"{', '.join((*dataset_names(), 'none'))}"
            )
        return value

    @field_validator("oracle_signers")
    @classmethod
    def _signer_addresses(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        from eth_utils import is_address, to_checksum_address

        bad = [a for a in value if not is_address(a)]
        if bad or not value:
            raise ConfigError(f"oracle_signers must be a non-empty list of addresses, got {bad}")
        if len({a.lower() for a in value}) != len(value):
            raise ConfigError("oracle_signers lists an address twice")
        return [to_checksum_address(a) for a in value]

    @model_validator(mode="after")
    def _caps(self) -> Settings:
        if self.holder_cap_wei is not None and self.holder_cap_wei > self.campaign_round_cap_wei:
            raise ConfigError(
                f"holder_cap_wei {self.holder_cap_wei} exceeds the round cap "
                f"{self.campaign_round_cap_wei} (round_cap_wei, or the budget when unset)"
            )
        return self

    @model_validator(mode="after")
    def _one_key_source(self) -> Settings:
        if self.keystore_dir is not None and self.oracle_keys:
            raise ConfigError(
                "both keystore_dir and oracle_keys are set; give the oracle keys one way "
                "(CCOMP_KEYSTORE_DIR or CCOMP_ORACLE_KEYS)"
            )
        return self

    @property
    def campaign_round_cap_wei(self) -> int:
        """The ``roundCap`` the campaign is created with: ``round_cap_wei`` or the budget."""
        return self.round_cap_wei if self.round_cap_wei is not None else self.total_budget_wei

    @property
    def campaign_holder_cap_wei(self) -> int:
        """The ``holderCap`` the campaign is created with: ``holder_cap_wei`` or the round cap."""
        return (
            self.holder_cap_wei if self.holder_cap_wei is not None else self.campaign_round_cap_wei
        )

    @classmethod
    def for_profile(cls, profile: str | None, **overrides: object) -> Settings:
        """Settings of ``profile`` (None: ``CCOMP_PROFILE`` or ``demo``) with ``overrides``
        applied; None overrides are left out (explicit values win over the profile).

        Raises:
            ConfigError: an unknown profile, setting or value (one line, naming them).
        """
        values = {k: v for k, v in {"profile": profile, **overrides}.items() if v is not None}
        return settings_from(None, **values)


_PROFILES: dict[str, dict[str, object]] = {
    "demo": {},
    "tiny": {
        "holder_sizes": (6, 8, 10, 12),
        "n_holders": 4,
        "n_rounds": 2,
        "n_samples": 4,
        "train_steps": 8,
        "proj_dim": 32,
        "trak_timesteps": 2,
        "trak_ensemble": 2,
        "quality_samples": 8,
        "quality_classifier_epochs": 1,
        "total_budget_wei": 1000 * WEI_PER_TOKEN,
    },
}


DATASET_PRESETS: dict[str, dict[str, dict[str, object]]] = {
    "mnist": {},
    "emoji": {
        "demo": {
            "backend": "text-unet",
            "image_size": 32,
            "quality_reference": "emoji",
            "quality_samples": 128,
        },
        "tiny": {
            "backend": "text-unet",
            "image_size": 16,
            "quality_reference": "emoji",
            "n_holders": 2,
            "holder_sizes": (12, 16),
            "copyright_probes": 2,
        },
    },
}
"""Dataset → profile → the settings that dataset implies under that profile. They override
the profile's (:data:`_PROFILES`) and yield to explicit values. ``emoji``: the text-conditioned
``text-unet`` backend at 32 px (16 px in ``tiny``), FID against held-out emoji, 128 quality
samples (the least docs/quality.md accepts, halving the stage's sampling time); ``tiny``
keeps two small holders and two copyright probes per holder for a test that runs in seconds."""

BACKEND_PRESETS: dict[str, dict[str, object]] = {
    "sd-lora": {"image_size": 256, "guidance_scale": 7.5},
}
"""Backend → the settings it implies; they override the profile's and the dataset's presets and
yield to explicit values. ``sd-lora``: 256 px (Stable Diffusion's VAE downsamples by 8, so the
dataset presets' 16–32 px would leave 2–4 latent pixels; set 512 for SD 1.x at full size) and
guidance 7.5, Stable Diffusion's usual scale."""


def _mnist_source(settings: Settings) -> list[Holder]:
    return mnist_holders(
        n_holders=settings.n_holders, sizes=settings.holder_sizes, seed=settings.seed
    )


def _emoji_source(settings: Settings) -> list[Holder]:
    from offchain.data.emoji import emoji_holders  # reads node_modules/: only when used

    return emoji_holders(
        n_holders=settings.n_holders, sizes=settings.holder_sizes, seed=settings.seed
    )


HOLDER_SOURCES: dict[str, Callable[[Settings], list[Holder]]] = {
    "mnist": _mnist_source,
    "emoji": _emoji_source,
}
"""``dataset`` → the function building its holders from the settings: ``mnist`` →
:func:`offchain.data.holders.mnist_holders` (``n_holders``, ``holder_sizes``, ``seed``),
``emoji`` → :func:`offchain.data.emoji.emoji_holders` (``n_holders``, ``holder_sizes``,
``seed``)."""


def _setting_names() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def _unknown_setting(name: str, where: str) -> ConfigError:
    known = sorted(_setting_names())
    close = difflib.get_close_matches(name.upper(), known, n=1)
    hint = f"; did you mean {close[0]}?" if close else "; see offchain/config.py"
    return ConfigError(f"unknown setting {name} in {where}{hint}")


def check_environment(environ: dict[str, str] | os._Environ[str]) -> None:
    """Refuse ``CCOMP_*`` variables (any case) that are not settings.

    Raises:
        ConfigError: naming the first unknown variable (and the closest setting).
    """
    allowed = _setting_names()
    for name in sorted(environ):
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in allowed:
            raise _unknown_setting(name, "the environment")


def check_env_file(path: Path) -> None:
    """Check a ``--config`` env file before it is loaded: every line is blank, a ``#`` comment
    or ``KEY=VALUE`` (``export`` and quoted, also multi-line, values allowed), and every key is
    a setting (``CCOMP_<FIELD>``).

    Raises:
        ConfigError: the file is missing or unreadable, a line is not ``KEY=VALUE`` (naming its
            number), or a key is not a setting.
    """
    from dotenv.parser import parse_stream

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    known = _setting_names()
    for binding in parse_stream(io.StringIO(text)):
        original = binding.original.string
        line = binding.original.line + len(original) - len(original.lstrip("\n"))
        if binding.error or (binding.key is not None and binding.value is None):
            raise ConfigError(f"config file {path} line {line}: not KEY=VALUE "
                              f"({original.strip()[:60]!r})")
        if binding.key is not None and binding.key.upper() not in known:
            raise _unknown_setting(binding.key, f"config file {path} line {line}")


def one_line(exc: ValidationError) -> str:
    """A pydantic validation error as one line: ``field: message; …`` (no input values)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
        for err in exc.errors()
    )


def settings_from(config: Path | None = None, **values: object) -> Settings:
    """Settings from ``values`` (flags; None is left out), the environment and, when given,
    the env file ``config`` (checked by :func:`check_env_file`), in that order of precedence.
    Arms the process's fault point (:func:`offchain.faults.arm`) from ``fault_kill``.

    Raises:
        ConfigError: one line naming the bad setting, line, variable or value.
    """
    given = {k: v for k, v in values.items() if v is not None}
    if config is not None:
        check_env_file(config)
    try:
        if config is None:
            settings = Settings(**given)  # type: ignore[arg-type]
        else:
            settings = Settings(_env_file=config, **given)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {one_line(exc)}") from None
    faults.arm(settings.fault_kill)
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (environment + defaults), cached; tests build their own."""
    settings = Settings()
    faults.arm(settings.fault_kill)
    return settings
