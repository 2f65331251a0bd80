"""Command line: ``python -m offchain <command>`` or the ``offchain`` console script.

Commands import what only they need when they run: the chain clients (web3), the API server
(fastapi, uvicorn), the state database (sqlalchemy) and the ML stack (torch, diffusers, scipy,
scikit-learn, gymnasium) take seconds to load, and ``--help`` or a chain command should not
pay for them. Those function-level imports are the only ones here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from eth_keys import keys
from eth_keys.exceptions import ValidationError as KeyRangeError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from offchain.allocation.wei import UINT256_MAX, js_safe
from offchain.attribution.defaults import DEFAULT_PROJ_DIM, DEFAULT_TRAK_TIMESTEPS
from offchain.cli.register import private_key, register_holder_cmd
from offchain.config import Settings, settings_from
from offchain.cpu import configure_openmp
from offchain.data.holders import holder_private_key, training_captions, training_set
from offchain.errors import ConfigError, OffchainError, StageError
from offchain.jsonsafe import pin_recursion_limit
from offchain.layout import RoundPaths
from offchain.oracle.keystore import create_keystore, list_keystores, read_password
from offchain.oracle.report import format_tokens
from offchain.oracle.run_folder import load_holders
from offchain.policy.calibrate import (
    CALIBRATION_FILE,
    EnvCalibration,
    env_calibration_report,
    fit_env_calibration,
)
from offchain.rounds.config import MLConfig
from offchain.rounds.measure import measure_rounds
from offchain.utils import read_json

if TYPE_CHECKING:  # web3: loaded by the chain commands only
    from offchain.oracle.deployment import Deployment

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download weights
configure_openmp()  # threads this process may use, idle threads sleep soon (offchain.cpu)

app = typer.Typer(
    help="Copyright-aware compensation of diffusion-model data holders (oracle node).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
"""Errors and, with ``--json``, progress: stdout then carries only the JSON document."""

EXIT_NOTHING_TO_CLAIM = 3
"""Exit code of ``claim`` when the key has nothing to claim (0: claimed, 1: an error)."""


@app.callback()
def _entry() -> None:
    """Runs before every command: keep the recursion limit at CPython's default."""
    pin_recursion_limit()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _fail(exc: OffchainError) -> None:
    """Print ``error: <message>`` as one line on stderr and exit with code 1."""
    message = " ".join(str(exc).split())
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code=1)


@app.command()
def demo(
    profile: Annotated[
        str | None, typer.Option(help="Size preset: demo or tiny; default $CCOMP_PROFILE or demo.")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Artifacts folder; default runs/<profile>.")
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option(help="Empty the run folder first (only one marked as a run folder)."),
    ] = True,
    rounds: Annotated[int | None, typer.Option(help="Rounds T.")] = None,
    policy: Annotated[str | None, typer.Option(help="Budget policy <upper>/<lower>.")] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="Holders: mnist (grayscale digits) or emoji (captioned color art, "
                     "the text-unet backend); default $CCOMP_DATASET or mnist."),
    ] = None,
    holders_dir: Annotated[
        Path | None, typer.Option(help="Own data: <dir>/<holder>/*.png instead of a dataset.")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu or cuda; default $CCOMP_DEVICE or auto.")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(help="Model backend: ddpm, text-unet or sd-lora; default $CCOMP_BACKEND "
                     "or the dataset's."),
    ] = None,
    model_path: Annotated[
        Path | None,
        typer.Option(help="Local diffusers Stable Diffusion folder (sd-lora); default "
                     "$CCOMP_MODEL_PATH."),
    ] = None,
    num_processes: Annotated[
        int | None,
        typer.Option(help="Processes of the distributed stages (accelerate launch); default "
                     "$CCOMP_NUM_PROCESSES or 1."),
    ] = None,
    rpc_url: Annotated[str | None, typer.Option(help="Chain RPC; default: a local anvil.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of everything.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Deploy, fund, run every round (train → TRAK → copyright → policy → pay) and claim.

    Every input is checked before the run folder is touched; --fresh deletes only a folder
    marked as a run folder (.ccomp-run) or an older run folder holding nothing else."""
    _setup_logging(verbose)
    from offchain.oracle.campaign import run_campaign

    try:
        settings = Settings.for_profile(
            profile,
            run_dir=run_dir,
            n_rounds=rounds,
            policy=policy,
            dataset=dataset,
            holders_dir=holders_dir,
            device=device,
            backend=backend,
            model_path=model_path,
            num_processes=num_processes,
            rpc_url=rpc_url,
            seed=seed,
        )
        if "run_dir" not in settings.model_fields_set:
            settings = settings.model_copy(update={"run_dir": Path("runs") / settings.profile})
        result = run_campaign(settings, console=console, fresh=fresh)
    except OffchainError as exc:
        _fail(exc)
        return
    if result.balances_wei != result.allocated_wei:
        console.print("[bold red]on-chain balances differ from the allocations[/bold red]")
        raise typer.Exit(code=2)


@app.command("compile")
def compile_(
    solc_path: Annotated[str | None, typer.Option(help="Explicit solc executable.")] = None,
) -> None:
    """Compile the Solidity contracts (cached in build/contracts)."""
    from offchain.chain import compile_contracts

    try:
        compiled = compile_contracts(solc_path=solc_path)
    except OffchainError as exc:
        _fail(exc)
        return
    table = Table(title="Compiled contracts")
    table.add_column("contract")
    table.add_column("bytecode (bytes)", justify="right")
    for name, contract in sorted(compiled.items()):
        table.add_row(name, str(len(contract.bytecode.removeprefix("0x")) // 2))
    console.print(table)


@app.command()
def holders(
    holders_dir: Annotated[Path | None, typer.Option(help="Own data folder.")] = None,
    profile: Annotated[
        str | None, typer.Option(help="Size preset of the split; default $CCOMP_PROFILE.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="mnist or emoji; default $CCOMP_DATASET or mnist.")
    ] = None,
) -> None:
    """List the holders a campaign would register (address, images, reservation price,
    licence)."""

    try:
        found = load_holders(
            Settings.for_profile(profile, holders_dir=holders_dir, dataset=dataset)
        )
    except OffchainError as exc:
        _fail(exc)
        return
    table = Table(title="Holders")
    for column in ("holder", "address", "images", "price/round (TST)", "licence"):
        table.add_column(column)
    for h in found:
        table.add_row(h.name, h.address, str(h.n_images), format_tokens(h.reservation_price_wei),
                      h.licence or "—")
    console.print(table)


@app.command()
def serve(
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Run folder whose rounds to serve; default: the settings' run_dir."),
    ] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    holders_dir: Annotated[
        Path | None,
        typer.Option(help="Folder where POST /holders stores registrations; unset: disabled."),
    ] = None,
    manifest_root: Annotated[
        list[Path] | None,
        typer.Option(
            "--manifest-root",
            help="Folder (repeatable) POST /holders/manifest may read images from; unset: off.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Env file of CCOMP_* settings (state_url, api_token …), passed on to jobs.",
        ),
    ] = None,
    deployment: Annotated[
        Path | None,
        typer.Option("--deployment", help="Deployment file; default <run-dir>/deployment.json."),
    ] = None,
    dev: Annotated[
        bool,
        typer.Option("--dev", help="Operator jobs use anvil's dev keys for missing keys."),
    ] = False,
) -> None:
    """Serve the rounds, allocations, campaigns and holders' Merkle proofs over HTTP (with
    --holders-dir, holder registration; with CCOMP_API_TOKEN, the operator endpoints)."""
    import uvicorn

    from offchain.api.app import create_app
    from offchain.api.operator import OperatorConfig

    try:
        settings = _op_settings(config, run_dir=run_dir)
        served = Path(settings.run_dir)
        operator = OperatorConfig(
            token=settings.api_token,
            config_file=config.resolve() if config is not None else None,
            deployment_file=deployment.resolve() if deployment is not None else None,
            dev=dev,
        )
        app_ = create_app(
            served,
            holders_dir=holders_dir,
            allowed_manifest_roots=manifest_root or (),
            state_url=settings.state_url,
            deployment_file=deployment,
            operator=operator,
            chain_rpc_url=settings.rpc_url,  # claimed flags from the chain (CCOMP_RPC_URL)
        )
    except OffchainError as exc:
        _fail(exc)
        return
    uvicorn.run(app_, host=host, port=port)


@app.command()
def lds(
    out: Annotated[Path, typer.Option(help="Run folder (resumable).")] = Path("runs/lds"),
    subsets: Annotated[int, typer.Option(help="Retrained models J per granularity.")] = 24,
    train_steps: Annotated[int, typer.Option(help="Steps per model (full and retrained).")] = 300,
    targets: Annotated[int, typer.Option(help="Generated targets M.")] = 32,
    proj_dim: Annotated[int, typer.Option(help="TRAK projection dimension.")] = DEFAULT_PROJ_DIM,
    trak_timesteps: Annotated[
        int, typer.Option(help="K timesteps of the TRAK output.")
    ] = DEFAULT_TRAK_TIMESTEPS,
    eval_timesteps: Annotated[int, typer.Option(help="E timesteps of the measured loss.")] = 100,
    trak_ensemble: Annotated[int, typer.Option(help="TRAK seeds averaged (re-scores only).")] = 1,
    train_seeds: Annotated[
        int, typer.Option(help="Models per subset, outputs averaged (cost × S).")
    ] = 1,
    kinds: Annotated[str, typer.Option(help="Comma list: examples,holders.")] = "examples,holders",
    methods: Annotated[
        str, typer.Option(help="Comma list: dtrak,loss,random,pixel,count.")
    ] = "dtrak,loss,random,pixel,count",
    profile: Annotated[
        str | None, typer.Option(help="Holder split preset; default $CCOMP_PROFILE or demo.")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="mnist or emoji (its backend, image size and captions); default "
                     "$CCOMP_DATASET or mnist."),
    ] = None,
    holders_dir: Annotated[Path | None, typer.Option(help="Own data folder.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of models, subsets and noise.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Validate TRAK: linear datamodeling score over models retrained on 50 % subsets (with the
    dataset's backend, image size, device and guidance; a conditional backend trains on the
    holders' captions)."""
    _setup_logging(verbose)
    from offchain.attribution.lds import LDSConfig, run_lds
    from offchain.diffusion import get_backend

    try:
        settings = Settings.for_profile(profile, holders_dir=holders_dir, dataset=dataset)
        found = load_holders(settings)
        images, index = training_set(found)
        captions = training_captions(found)
        conditional = get_backend(settings.backend).conditional
        cfg = LDSConfig(
            n_subsets=subsets,
            train_steps=train_steps,
            n_targets=targets,
            proj_dim=proj_dim,
            trak_timesteps=trak_timesteps,
            eval_timesteps=eval_timesteps,
            trak_ensemble=trak_ensemble,
            train_seeds=train_seeds,
            seed=seed,
            num_threads=threads,
            image_size=settings.image_size,
            backend=settings.backend,
            device=settings.device,
            guidance_scale=settings.guidance_scale,
        )
        run_lds(
            out,
            images,
            index,
            cfg,
            methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
            kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()),
            captions=captions if conditional and any(captions) else None,
        )
    except OffchainError as exc:
        _fail(exc)
        return
    console.print((out / "lds.md").read_text())


@app.command("policy-calibrate")
def policy_calibrate(
    dataset: Annotated[str, typer.Option(help="Holders' dataset: a name in the dataset registry (mnist, digits, lfw, …).")] = "mnist",
    out: Annotated[
        Path | None, typer.Option(help="Sweep folder (resumable); default runs/policy/<dataset>.")
    ] = None,
    campaigns: Annotated[int, typer.Option(help="Independent campaigns C of the sweep.")] = 4,
    rounds: Annotated[int, typer.Option(help="Rounds T per campaign.")] = 3,
    profile: Annotated[
        str | None, typer.Option(help="Size preset: demo or tiny; default $CCOMP_PROFILE or demo.")
    ] = None,
    from_runs: Annotated[
        list[Path] | None,
        typer.Option(help="Fit these run folders instead of measuring (repeatable)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of holders, design and models.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Measure rounds over varied participant sets and fit the policy environment's dynamics."""
    _setup_logging(verbose)

    out = out or Path("runs/policy") / dataset
    try:
        if from_runs:
            run_dirs = list(from_runs)
        else:
            import torch

            torch.set_num_threads(threads)
            settings = Settings.for_profile(profile, seed=seed)
            run_dirs = measure_rounds(
                dataset,
                out,
                n_campaigns=campaigns,
                n_rounds=rounds,
                ml=MLConfig.from_settings(settings, progress=False),
                seed=seed,
                n_holders=settings.n_holders,
                sizes=settings.holder_sizes,
                log=console.print,
            )
        calibration = fit_env_calibration(run_dirs, dataset)
        path = calibration.to_json(out / CALIBRATION_FILE)
    except OffchainError as exc:
        _fail(exc)
        return
    typer.echo(env_calibration_report(calibration))
    console.print(f"written {path}")


@app.command("calibrate-copyright")
def calibrate_copyright(
    round_dir: Annotated[
        Path, typer.Option(help="A finished round folder (checkpoint + training images).")
    ] = Path("runs/demo/round_003"),
    out: Annotated[
        Path | None, typer.Option(help="Output folder; default <round>/calibration.")
    ] = None,
    dataset: Annotated[
        str, typer.Option(help="The run's dataset (mnist, emoji): its model backend.")
    ] = "mnist",
    external: Annotated[
        str | None,
        typer.Option(help="Extra unrelated negatives: a registered dataset minus the holders' "
                     "(default: --dataset's)."),
    ] = None,
    n_external: Annotated[int, typer.Option(help="How many external negatives.")] = 500,
    encoder: Annotated[str, typer.Option(help="unet | torchscript:<path> | hf:<path>.")] = "unet",
    seed: Annotated[int, typer.Option(help="Seed of augmentations and negatives.")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Calibrate the copyright metric: augmented copies vs unrelated works; P/R table."""
    _setup_logging(verbose)
    from offchain.copyright import run_calibration
    from offchain.data.datasets import load_dataset
    from offchain.diffusion import get_backend
    from offchain.quality import exclude_images

    try:
        paths = RoundPaths(round_dir.parent, int(round_dir.name.removeprefix("round_")))
        for needed in (paths.manifest, paths.train_images, paths.checkpoint):
            if not needed.exists():
                raise StageError(f"{round_dir} is not a trained round: {needed.name} is missing")
        manifest = read_json(paths.manifest)
        lora = paths.checkpoint / "sd_lora.json"  # an sd-lora round: the adapter and its base
        if lora.exists():
            saved = read_json(lora)
            image_size = int(saved["resolution"])
            settings = Settings.for_profile(None, dataset=dataset, image_size=image_size,
                                            backend="sd-lora", model_path=saved["model_path"])
        else:
            image_size = int(read_json(paths.checkpoint / "unet" / "config.json")["sample_size"])
            settings = Settings.for_profile(None, dataset=dataset, image_size=image_size)
        ml = MLConfig.from_settings(settings, progress=False)
        backend = get_backend(ml.backend).from_settings(ml)
        external = external or dataset
        extra = None
        if external:
            images, labels = load_dataset(external)
            hashes = [h for entry in manifest["holders"] for h in entry["image_hashes"]]
            kept, _ = exclude_images(images, labels, hashes)
            rng = np.random.default_rng(seed)
            extra = kept[rng.permutation(len(kept))[:n_external]]
        folder = run_calibration(
            paths.checkpoint,
            np.load(paths.train_images),
            np.load(paths.holder_index),
            out or round_dir / "calibration",
            image_size=image_size,
            encoder_spec=encoder,
            seed=seed,
            external=extra,
            backend=backend if backend.conditional else None,  # ddpm: its numbers as before
        )
    except (OffchainError, ValueError) as exc:
        _fail(exc if isinstance(exc, OffchainError) else StageError(str(exc)))
        return
    typer.echo((folder.parent / "calibration.md").read_text())


def _policy_configs(
    rounds: int | None,
    demand: float | None,
    campaign_config: Path | None,
    reward_config: Path | None,
):
    """CampaignConfig and RewardConfig from optional JSON files, then option overrides."""
    from offchain.policy.env import CampaignConfig, RewardConfig

    try:
        campaign = (
            CampaignConfig.model_validate_json(campaign_config.read_text())
            if campaign_config
            else CampaignConfig()
        )
        reward = (
            RewardConfig.model_validate_json(reward_config.read_text())
            if reward_config
            else RewardConfig()
        )
        overrides = {k: v for k, v in (("n_rounds", rounds), ("demand", demand)) if v is not None}
        if overrides:
            campaign = CampaignConfig(**{**campaign.model_dump(), **overrides})
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"bad policy configuration: {exc}") from None
    return campaign, reward


def _calibration_path(dataset: str, calibration: Path | None) -> Path:
    return calibration or Path("runs/policy") / dataset / "env_calibration.json"


@app.command("policy-train")
def policy_train(
    dataset: Annotated[
        str, typer.Option(help="Calibrated dataset: mnist, digits or lfw.")
    ] = "mnist",
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="env_calibration.json; default runs/policy/<dataset>/env_calibration.json."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Policy folder; default runs/policy/<dataset>/rl-seed<seed>."),
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(help="Rounds T of the campaigns (default 5).")
    ] = None,
    demand: Annotated[
        float | None, typer.Option(help="Cost of keeping everyone, share of B (default 0.6).")
    ] = None,
    campaign_config: Annotated[
        Path | None, typer.Option(help="JSON of CampaignConfig (prices, exposure, caps).")
    ] = None,
    reward_config: Annotated[
        Path | None, typer.Option(help="JSON of RewardConfig (the sponsor's reward weights).")
    ] = None,
    timesteps: Annotated[int, typer.Option(help="PPO rounds per training phase.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of PPO and of the simulated campaigns.")] = 0,
    episodes: Annotated[int, typer.Option(help="Campaigns of the check against Linear.")] = 100,
    progress: Annotated[bool, typer.Option(help="Progress bars.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train the hierarchical RL budget policy (PPO, stable-baselines3) in the calibrated env,
    then compare it with two Linear baselines on held-out simulated campaigns."""
    _setup_logging(verbose)
    from offchain.policy import make_policy
    from offchain.policy.env import CampaignSimulator
    from offchain.policy.rl import PPOConfig, load_policy, train_policy

    try:
        campaign, reward = _policy_configs(rounds, demand, campaign_config, reward_config)
        cal = EnvCalibration.from_json(_calibration_path(dataset, calibration))
        folder = out or Path("runs/policy") / cal.dataset / f"rl-seed{seed}"
        train_policy(
            cal,
            folder,
            campaign=campaign,
            reward=reward,
            ppo=PPOConfig(timesteps=timesteps),
            seed=seed,
            progress=progress,
        )
        sim = CampaignSimulator(cal, campaign, reward)
        table = Table(title=f"{cal.dataset}: mean over {episodes} held-out campaigns")
        for col in ("policy", "return", "retained", "budget spent", "FID"):
            table.add_column(col)
        for name, policy in (
            ("rl/rl", load_policy(folder)),
            ("linear/equal", make_policy("linear/equal")),
            ("linear/contribution", make_policy("linear/contribution")),
        ):
            runs = [sim.run(policy, seed=10**6 + e) for e in range(episodes)]
            table.add_row(
                name,
                f"{np.mean([r.episode_return for r in runs]):.3f}",
                f"{np.mean([r.retained for r in runs]):.2f}",
                f"{np.mean([r.budget_spent for r in runs]):.2f}",
                f"{np.mean([r.fid_final for r in runs]):.1f}",
            )
    except OffchainError as exc:
        _fail(exc)
        return
    console.print(table)
    console.print(f"Policy in {folder}; use it with --policy rl:{folder}")


@app.command("policy-evaluate")
def policy_evaluate(
    datasets: Annotated[
        str, typer.Option(help="Comma list of calibrated datasets.")
    ] = "mnist,digits,lfw",
    root: Annotated[Path, typer.Option(help="Folder of <dataset>/env_calibration.json.")] = Path(
        "runs/policy"
    ),
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("runs/policy/eval"),
    seeds: Annotated[
        int, typer.Option(help="Seeds (RL trainings) per dataset, >= 5 for the table.")
    ] = 5,
    episodes: Annotated[int, typer.Option(help="Campaigns per method and seed.")] = 50,
    rounds: Annotated[int | None, typer.Option(help="Rounds T (default 5).")] = None,
    demand: Annotated[
        float | None, typer.Option(help="Cost of keeping everyone, share of B.")
    ] = None,
    campaign_config: Annotated[Path | None, typer.Option(help="JSON of CampaignConfig.")] = None,
    reward_config: Annotated[Path | None, typer.Option(help="JSON of RewardConfig.")] = None,
    timesteps: Annotated[int, typer.Option(help="PPO rounds per training phase.")] = 20_000,
    jobs: Annotated[int, typer.Option(help="Policies trained in parallel (processes).")] = 1,
    progress: Annotated[bool, typer.Option(help="Progress bars.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """The evaluation table: every method x dataset, mean and 95 % interval over seeds, plots."""
    _setup_logging(verbose)
    from offchain.policy.evaluate import EvaluationConfig, evaluate
    from offchain.policy.rl import PPOConfig

    try:
        campaign, reward = _policy_configs(rounds, demand, campaign_config, reward_config)
        names = [d.strip() for d in datasets.split(",") if d.strip()]
        calibrations = {
            d: EnvCalibration.from_json(root / d / "env_calibration.json") for d in names
        }
        with Progress(console=console, disable=not progress) as bar:
            task = bar.add_task("trained policies", total=len(names) * seeds)
            evaluate(
                calibrations,
                out,
                campaign=campaign,
                reward=reward,
                ppo=PPOConfig(timesteps=timesteps),
                config=EvaluationConfig(seeds=tuple(range(seeds)), episodes=episodes),
                jobs=jobs,
                on_policy=lambda *_: bar.advance(task),
            )
    except OffchainError as exc:
        _fail(exc)
        return
    console.print((out / "table.md").read_text())
    console.print(f"Results, episodes.csv and plots in {out}")


keys_app = typer.Typer(
    help="Encrypted keystores of the oracle signer keys (addresses only are printed).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(
    directory: Annotated[Path, typer.Option("--dir", help="Keystore folder (created 0700).")],
    password_file: Annotated[
        Path | None,
        typer.Option(help="File with the password (mode 600); default: $CCOMP_KEYSTORE_PASSWORD."),
    ] = None,
    import_key_file: Annotated[
        Path | None,
        typer.Option(help="File holding an existing 0x-hex private key; default: a new key."),
    ] = None,
) -> None:
    """Encrypt a new (or imported) signer key into <dir>/<address>.json; print the address."""

    try:
        password = read_password(password_file, settings_from().keystore_password)
        private_key = None
        if import_key_file is not None:
            try:
                private_key = import_key_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read key file {import_key_file}: {exc.strerror}"
                ) from exc
        address = create_keystore(directory, password, private_key)
    except OffchainError as exc:
        _fail(exc)
        return
    typer.echo(address)


@keys_app.command("list")
def keys_list(
    directory: Annotated[Path, typer.Option("--dir", help="Keystore folder.")],
) -> None:
    """Print the address of each keystore in the folder (nothing is decrypted)."""

    try:
        addresses = list_keystores(directory)
    except OffchainError as exc:
        _fail(exc)
        return
    for address in addresses:
        typer.echo(address)

# -- campaign operations (offchain.oracle.operations) ---------------------------------------------

RpcUrl = Annotated[
    str | None, typer.Option(help="Chain RPC (or CCOMP_RPC_URL); default: the deployment's.")
]
DeploymentFile = Annotated[
    Path | None,
    typer.Option("--deployment", help="Deployment file; default <run-dir>/deployment.json."),
]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="Env file of CCOMP_* settings (KEY=value lines).")
]
Dev = Annotated[
    bool,
    typer.Option("--dev", help="Missing keys: anvil's public dev accounts (local anvil only)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
CampaignId = Annotated[
    int | None, typer.Option(help="Campaign id; default: the deployment file's.")
]


def _op_settings(config: Path | None, **overrides: object) -> Settings:
    """Settings from the given flags, the environment and ``config`` (an env file, checked
    line by line), in that order of precedence.

    Raises:
        ConfigError: one line naming the bad line, setting or value.
    """

    return settings_from(config, **overrides)


def _print_record(title: str, record: dict[str, object], as_json: bool) -> None:
    if as_json:  # wei amounts as decimal strings, exact for a JavaScript client (issue 13)
        typer.echo(json.dumps(js_safe(record), indent=2, default=str))
        return
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in record.items():
        if key != "rounds":
            table.add_row(key, str(value))
    console.print(table)


def _op_campaign(
    config: Path | None,
    rpc_url: str | None,
    run_dir: Path | None,
    deployment: Path | None,
    campaign_id: int | None,
    **overrides: object,
) -> tuple[Settings, Deployment, int]:
    """Settings, the loaded deployment file and the campaign id a campaign command acts on."""
    from offchain.oracle.deployment import load_deployment

    settings = _op_settings(config, rpc_url=rpc_url, run_dir=run_dir, **overrides)
    loaded = load_deployment(settings, deployment)
    return settings, loaded, _campaign_id(loaded, campaign_id)


def _campaign_id(deployment: Deployment, campaign_id: int | None) -> int:

    if campaign_id is not None:
        return _uint256("--campaign-id", campaign_id, low=0)
    if deployment.campaign_id is None:
        raise ConfigError(
            "no campaign in the deployment file; run create-campaign or pass --campaign-id"
        )
    return int(deployment.campaign_id)


@app.command()
def deploy(
    rpc_url: RpcUrl = None,
    token: Annotated[
        str | None, typer.Option(help="Existing ERC-20 address; default: deploy a TestToken.")
    ] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run folder (deployment file).")] = None,
    deployment: DeploymentFile = None,
    config: ConfigFile = None,
    dev: Dev = False,
    as_json: AsJson = False,
) -> None:
    """Deploy the CompensationPool (and a TestToken) and write the deployment file."""
    from offchain.oracle import operations
    from offchain.oracle.deployment import deployment_path

    try:
        settings = _op_settings(config, rpc_url=rpc_url, run_dir=run_dir)
        result = operations.deploy(settings, token=token, dev=dev, path=deployment)
    except OffchainError as exc:
        _fail(exc)
        return
    record = result.to_json()
    record["deployment_file"] = str(deployment_path(settings, deployment))
    _print_record("Deployment", record, as_json)


@app.command("create-campaign")
def create_campaign_(
    rpc_url: RpcUrl = None,
    rounds: Annotated[int | None, typer.Option(help="Rounds T.")] = None,
    round_cap_wei: Annotated[int | None, typer.Option(help="Per-round cap (wei).")] = None,
    holder_cap_wei: Annotated[int | None, typer.Option(help="Per-holder cap (wei).")] = None,
    challenge_window_s: Annotated[int | None, typer.Option(help="Guardian's window (s).")] = None,
    claim_window_s: Annotated[int | None, typer.Option(help="Claim window (s).")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run folder (deployment file).")] = None,
    deployment: DeploymentFile = None,
    config: ConfigFile = None,
    dev: Dev = False,
    as_json: AsJson = False,
) -> None:
    """Create a campaign (signers, threshold, caps, windows from the settings) on the pool."""
    from offchain.oracle import operations
    from offchain.oracle.deployment import load_deployment

    try:
        settings = _op_settings(
            config, rpc_url=rpc_url, run_dir=run_dir, n_rounds=rounds,
            round_cap_wei=round_cap_wei, holder_cap_wei=holder_cap_wei,
            challenge_window_s=challenge_window_s, claim_window_s=claim_window_s,
        )
        loaded = load_deployment(settings, deployment)
        campaign_id = operations.create_campaign(settings, loaded, dev=dev, path=deployment)
    except OffchainError as exc:
        _fail(exc)
        return
    _print_record("Campaign", {"campaign_id": campaign_id, **loaded.campaign}, as_json)


def _uint256(what: str, value: int, *, low: int) -> int:
    """``value`` if ``low ≤ value ≤ 2²⁵⁶ − 1`` (what the contracts take), else ConfigError."""

    if not low <= value <= UINT256_MAX:
        shown = str(value) if len(str(value)) <= 90 else f"{str(value)[:20]}… ({len(str(value))} digits)"
        raise ConfigError(f"{what} {shown} is outside {low} … 2**256-1 (uint256)")
    return value


@app.command()
def fund(
    amount_wei: Annotated[int, typer.Argument(help="Amount in wei (smallest token unit).")],
    campaign_id: CampaignId = None,
    rpc_url: RpcUrl = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run folder (deployment file).")] = None,
    deployment: DeploymentFile = None,
    config: ConfigFile = None,
    dev: Dev = False,
    as_json: AsJson = False,
) -> None:
    """Fund a campaign from the sponsor (minting the shortfall on the local TestToken)."""
    from offchain.oracle import operations

    try:
        _uint256("amount", amount_wei, low=1)
        settings, loaded, cid = _op_campaign(config, rpc_url, run_dir, deployment, campaign_id)
        result = operations.fund(settings, loaded, cid, amount_wei, dev=dev)
    except OffchainError as exc:
        _fail(exc)
        return
    _print_record("Funded", dataclasses.asdict(result), as_json)


@app.command()
def status(
    campaign_id: CampaignId = None,
    rpc_url: RpcUrl = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run folder (deployment file).")] = None,
    deployment: DeploymentFile = None,
    config: ConfigFile = None,
    as_json: AsJson = False,
) -> None:
    """A campaign's parameters, escrow and rounds (challengeable/pending/finalized/revoked)."""
    from offchain.oracle import operations

    try:
        settings, loaded, cid = _op_campaign(config, rpc_url, run_dir, deployment, campaign_id)
        record = operations.status(settings, loaded, cid)
    except OffchainError as exc:
        _fail(exc)
        return
    _print_record(f"Campaign {record['campaign_id']}", record, as_json)
    if as_json:
        return
    table = Table(title="Rounds")
    for column in ("round", "state", "total (wei)", "claimed (wei)", "finalizes at"):
        table.add_column(column)
    for r in record["rounds"]:
        table.add_row(str(r["round_id"]), r["state"], str(r["total_wei"]),
                      str(r["claimed_wei"]), str(r["finalizes_at"]))
    console.print(table)


@app.command()
def claim(
    campaign_id: CampaignId = None,
    holder: Annotated[
        str | None, typer.Option(help="Demo holder name (MNIST split): its derived key.")
    ] = None,
    key_file: Annotated[
        Path | None, typer.Option(help="File holding the holder's private key (0x-hex).")
    ] = None,
    round_dir: Annotated[
        list[Path] | None, typer.Option(help="Round folder(s); default: all of --run-dir.")
    ] = None,
    rpc_url: RpcUrl = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run folder (rounds, deployment).")] = None,
    deployment: DeploymentFile = None,
    config: ConfigFile = None,
    as_json: AsJson = False,
) -> None:
    """Claim a holder's unclaimed payments of final rounds (proofs from the rounds' tree.json).

    Exit codes: 0 claimed, 1 error, 3 nothing to claim (the reason per round on stderr)."""
    from offchain.oracle import operations

    try:
        if (holder is None) == (key_file is None):
            raise ConfigError("give the holder's key one way: --holder NAME or --key-file FILE")
        if holder is not None:
            key = holder_private_key(holder)
        else:
            key = _read_key_file(key_file)  # type: ignore[arg-type]
        settings, loaded, cid = _op_campaign(config, rpc_url, run_dir, deployment, campaign_id)
        result = operations.claim(settings, loaded, cid, key, round_dirs=round_dir)
    except OffchainError as exc:
        _fail(exc)
        return
    _print_record("Claim", dataclasses.asdict(result), as_json)
    if not result.rounds:
        reasons = "; ".join(f"round {r}: {why}" for r, why in sorted(result.skipped.items()))
        err_console.print(
            f"nothing to claim for {result.holder} in campaign {cid}"
            + (f" ({escape(reasons)})" if reasons else ": no payment to this address"),
            soft_wrap=True,
        )
        raise typer.Exit(code=EXIT_NOTHING_TO_CLAIM)


def _read_key_file(path: Path) -> str:
    """The 0x-hex secp256k1 private key in ``path`` (surrounding whitespace ignored).

    Raises:
        ConfigError: the file is missing, a folder, unreadable, or does not hold a valid
            32-byte hex key (the message never shows the file's content).
    """

    if path.is_dir():
        raise ConfigError(f"key file {path} is a folder, not a file")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"key file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read key file {path}: {exc}") from None
    digits = text.removeprefix("0x").removeprefix("0X")
    try:
        if len(digits) != 64:
            raise ValueError
        keys.PrivateKey(bytes.fromhex(digits))
    except (ValueError, TypeError, KeyRangeError):
        raise ConfigError(
            f"key file {path} does not hold a private key (64 hex digits, optionally 0x-prefixed, "
            "in the secp256k1 range)"
        ) from None
    return "0x" + digits.lower()


@app.command()
def reclaim(
    campaign_id: CampaignId = None,
    rpc_url: RpcUrl = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run folder (deployment file).")] = None,
    deployment: DeploymentFile = None,
    config: ConfigFile = None,
    dev: Dev = False,
    as_json: AsJson = False,
) -> None:
    """After the claim deadline: the sponsor takes back its share of what is unclaimed."""
    from offchain.oracle import operations

    try:
        settings, loaded, cid = _op_campaign(config, rpc_url, run_dir, deployment, campaign_id)
        result = operations.reclaim(settings, loaded, cid, dev=dev)
    except OffchainError as exc:
        _fail(exc)
        return
    _print_record("Reclaimed", dataclasses.asdict(result), as_json)


@app.command("run-round")
def run_round(
    round_id: Annotated[
        int | None, typer.Option("--round", help="Round to run; default: the next unfinished.")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Stop after this stage (prepare … sign, submit, finalize, claim)."),
    ] = None,
    campaign_id: CampaignId = None,
    rpc_url: RpcUrl = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run folder (rounds, state.db).")] = None,
    deployment: DeploymentFile = None,
    config: ConfigFile = None,
    profile: Annotated[
        str | None,
        typer.Option(help="Size preset: demo or tiny; default $CCOMP_PROFILE or demo."),
    ] = None,
    dev: Dev = False,
    as_json: AsJson = False,
) -> None:
    """Run or resume one round of a deployed, funded campaign (train → … → post → claims).

    Stages done before (recorded in the run's state database) are skipped; a posted round is
    never posted twice. Exit code 1 with the reason when a stage cannot run (e.g. fewer than
    k oracle signatures: co-signers POST theirs to the API, then run again). With --json,
    stdout holds only the JSON result; progress goes to stderr."""
    from offchain.oracle import operations

    try:
        settings, loaded, cid = _op_campaign(config, rpc_url, run_dir, deployment, campaign_id,
                                             profile=profile)
        result = operations.run_round(settings, loaded, cid, round_id=round_id, until=until,
                                      dev=dev, console=err_console if as_json else console)
    except OffchainError as exc:
        _fail(exc)
        return
    _print_record(f"Round {result['round_id']}", result, as_json)


@app.command("follow-launches")
def follow_launches_(
    run_dir: Annotated[Path, typer.Option(help="The node's run folder, shared with this machine.")],
    accelerate_config: Annotated[
        Path,
        typer.Option(help="This machine's accelerate config YAML (num_machines ≥ 2, "
                     "machine_rank ≥ 1)."),
    ],
    poll_s: Annotated[float, typer.Option(help="Seconds between looks for new launches.")] = 1.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """On a secondary machine of a multi-machine accelerate setup: follow the node's distributed
    stages (train, featurize) in the shared run folder and start this machine's processes of
    each, once per launch. Leave it running; Ctrl-C stops it."""
    _setup_logging(verbose)
    from offchain.rounds.follow import follow_launches

    if poll_s <= 0:
        _fail(ConfigError(f"--poll-s must be > 0, got {poll_s}"))
    console.print(f"following launches in {escape(str(run_dir))} with "
                  f"{escape(str(accelerate_config))} (Ctrl-C stops)", soft_wrap=True)
    try:
        follow_launches(run_dir, accelerate_config, poll_s=poll_s,
                        echo=lambda line: console.print(escape(line), soft_wrap=True))
    except OffchainError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        console.print("stopped")


@app.command()
def cosign(
    api: Annotated[str, typer.Option(help="The oracle API, e.g. http://oracle.example:8000.")],
    round_id: Annotated[int, typer.Option("--round", help="Round to co-sign.")],
    keystore: Annotated[
        Path | None, typer.Option(help="Keystore file (or a folder with one) of the signer key.")
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option(help="Keystore password file; default $CCOMP_KEYSTORE_PASSWORD.")
    ] = None,
    dev_index: Annotated[
        int | None, typer.Option(help="Sign with anvil dev account N (local demos only).")
    ] = None,
    deployment: Annotated[
        Path | None,
        typer.Option(help="Own deployment file: the request must name its chain, pool, campaign."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Co-sign a round's allocation (k-of-n): fetch its signing request from the oracle API,
    check it, sign its EIP-712 digest locally and post the signature."""
    from offchain.oracle import operations
    from offchain.oracle.deployment import read_deployment

    try:
        if deployment is not None and not deployment.is_file():
            raise ConfigError(f"deployment file {deployment} not found")
        expected = read_deployment(deployment) if deployment is not None else None
        key = private_key(keystore, password_file, dev_index)
        result = operations.cosign(
            api, round_id, key,
            chain_id=expected.chain_id if expected else None,
            pool=expected.pool if expected else None,
            campaign_id=expected.campaign_id if expected else None,
        )
    except OffchainError as exc:
        _fail(exc)
        return
    _print_record(f"Co-signed round {round_id}", result, as_json)


app.command("register-holder")(register_holder_cmd)


def main() -> None:
    """Entry point of ``python -m offchain``."""
    app()
