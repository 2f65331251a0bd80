"""Command line: ``python -m offchain <command>`` or the ``offchain`` console script."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from offchain.errors import OffchainError, StageError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download weights

app = typer.Typer(
    help="Copyright-aware compensation of diffusion-model data holders (oracle node).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _fail(exc: OffchainError) -> None:
    console.print(f"[bold red]error:[/bold red] {exc}")
    raise typer.Exit(code=1)


@app.command()
def demo(
    profile: Annotated[str, typer.Option(help="Size preset: demo or tiny.")] = "demo",
    run_dir: Annotated[Path | None, typer.Option(help="Artifacts folder.")] = None,
    fresh: Annotated[bool, typer.Option(help="Start from an empty run folder.")] = True,
    rounds: Annotated[int | None, typer.Option(help="Rounds T.")] = None,
    policy: Annotated[str | None, typer.Option(help="Budget policy <upper>/<lower>.")] = None,
    holders_dir: Annotated[
        Path | None, typer.Option(help="Own data: <dir>/<holder>/*.png instead of MNIST.")
    ] = None,
    rpc_url: Annotated[str | None, typer.Option(help="Chain RPC; default: a local anvil.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of everything.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Deploy, fund, run every round (train → TRAK → copyright → policy → pay) and claim."""
    _setup_logging(verbose)
    from offchain.config import Settings
    from offchain.oracle.node import run_campaign

    try:
        settings = Settings.for_profile(
            profile,
            run_dir=run_dir or Path("runs") / profile,
            n_rounds=rounds,
            policy=policy,
            holders_dir=holders_dir,
            rpc_url=rpc_url,
            seed=seed,
        )
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
    profile: Annotated[str, typer.Option(help="Size preset for the MNIST split.")] = "demo",
) -> None:
    """List the holders a campaign would register (address, images, reservation price)."""
    from offchain.config import Settings
    from offchain.oracle.node import load_holders
    from offchain.oracle.report import format_tokens

    try:
        found = load_holders(Settings.for_profile(profile, holders_dir=holders_dir))
    except OffchainError as exc:
        _fail(exc)
        return
    table = Table(title="Holders")
    for column in ("holder", "address", "images", "price/round (TST)"):
        table.add_column(column)
    for h in found:
        table.add_row(h.name, h.address, str(h.n_images), format_tokens(h.reservation_price_wei))
    console.print(table)


@app.command()
def serve(
    run_dir: Annotated[Path, typer.Option(help="Run folder whose rounds to serve.")] = Path(
        "runs/demo"
    ),
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """Serve the rounds, allocations and holders' Merkle proofs over HTTP (read-only)."""
    import uvicorn

    from offchain.api.app import create_app

    uvicorn.run(create_app(run_dir), host=host, port=port)


@app.command()
def lds(
    out: Annotated[Path, typer.Option(help="Run folder (resumable).")] = Path("runs/lds"),
    subsets: Annotated[int, typer.Option(help="Retrained models J per granularity.")] = 24,
    train_steps: Annotated[int, typer.Option(help="Steps per model (full and retrained).")] = 300,
    targets: Annotated[int, typer.Option(help="Generated targets M.")] = 32,
    proj_dim: Annotated[int, typer.Option(help="TRAK projection dimension.")] = 512,
    trak_timesteps: Annotated[int, typer.Option(help="K timesteps of the TRAK output.")] = 4,
    eval_timesteps: Annotated[int, typer.Option(help="E timesteps of the measured loss.")] = 100,
    trak_ensemble: Annotated[int, typer.Option(help="TRAK seeds averaged (re-scores only).")] = 1,
    train_seeds: Annotated[
        int, typer.Option(help="Models per subset, outputs averaged (cost × S).")
    ] = 1,
    kinds: Annotated[str, typer.Option(help="Comma list: examples,holders.")] = "examples,holders",
    methods: Annotated[
        str, typer.Option(help="Comma list: dtrak,loss,random,pixel,count.")
    ] = "dtrak,loss,random,pixel,count",
    profile: Annotated[str, typer.Option(help="Holder split preset (MNIST).")] = "demo",
    holders_dir: Annotated[Path | None, typer.Option(help="Own data folder.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of models, subsets and noise.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Validate TRAK: linear datamodeling score over models retrained on 50 % subsets."""
    _setup_logging(verbose)
    from offchain.attribution.lds import LDSConfig, run_lds
    from offchain.config import Settings
    from offchain.data.holders import training_set
    from offchain.oracle.node import load_holders

    try:
        found = load_holders(Settings.for_profile(profile, holders_dir=holders_dir))
        images, index = training_set(found)
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
        )
        run_lds(
            out,
            images,
            index,
            cfg,
            methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
            kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()),
        )
    except OffchainError as exc:
        _fail(exc)
        return
    console.print((out / "lds.md").read_text())


@app.command("calibrate-copyright")
def calibrate_copyright(
    round_dir: Annotated[
        Path, typer.Option(help="A finished round folder (checkpoint + training images).")
    ] = Path("runs/demo/round_003"),
    out: Annotated[
        Path | None, typer.Option(help="Output folder; default <round>/calibration.")
    ] = None,
    external: Annotated[
        str | None,
        typer.Option(help="Extra unrelated negatives: mnist, digits or lfw minus the holders'."),
    ] = "mnist",
    n_external: Annotated[int, typer.Option(help="How many external negatives.")] = 500,
    encoder: Annotated[str, typer.Option(help="unet | torchscript:<path> | hf:<path>.")] = "unet",
    seed: Annotated[int, typer.Option(help="Seed of augmentations and negatives.")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Calibrate the copyright metric: augmented copies vs unrelated works; P/R table."""
    _setup_logging(verbose)
    import numpy as np

    from offchain.copyright import run_calibration
    from offchain.quality import exclude_images, reference_dataset
    from offchain.rounds.layout import RoundPaths
    from offchain.utils import read_json

    try:
        paths = RoundPaths(round_dir.parent, int(round_dir.name.removeprefix("round_")))
        for needed in (paths.manifest, paths.train_images, paths.checkpoint):
            if not needed.exists():
                raise StageError(f"{round_dir} is not a trained round: {needed.name} is missing")
        manifest = read_json(paths.manifest)
        extra = None
        if external:
            images, labels = reference_dataset(external)
            hashes = [h for entry in manifest["holders"] for h in entry["image_hashes"]]
            kept, _ = exclude_images(images, labels, hashes)
            rng = np.random.default_rng(seed)
            extra = kept[rng.permutation(len(kept))[:n_external]]
        folder = run_calibration(
            paths.checkpoint,
            np.load(paths.train_images),
            np.load(paths.holder_index),
            out or round_dir / "calibration",
            image_size=int(read_json(paths.checkpoint / "unet" / "config.json")["sample_size"]),
            encoder_spec=encoder,
            seed=seed,
            external=extra,
        )
    except (OffchainError, ValueError) as exc:
        _fail(exc if isinstance(exc, OffchainError) else StageError(str(exc)))
        return
    typer.echo((folder.parent / "calibration.md").read_text())


def main() -> None:
    """Entry point of ``python -m offchain``."""
    app()
