"""``derelayl keys new``, ``derelayl node``: parsing and display only."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from derelayl.errors import DerelaylError
from derelayl.terminal import Rechecks, console, fail, on_off

__all__ = ["keys_app", "node"]

out = Console()

keys_app = typer.Typer(help="Participant keys.", no_args_is_help=True)


@keys_app.command("new")
def keys_new(path: Annotated[Path, typer.Argument(help="Key file to create (never overwritten).")]) -> None:
    """Create a new random Ethereum key for a node and print its address."""
    from derelayl.node.keys import new_key

    try:
        key = new_key(path)
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    out.print(key.address)


def node(
    key: Annotated[Path, typer.Option(help="This node's key file (derelayl keys new).")],
    rpc: Annotated[str, typer.Option(help="JSON-RPC URL of the Ethereum node.")],
    contract: Annotated[str, typer.Option(help="Address of the DeRelayL contract.")],
    data: Annotated[str, typer.Option(help="This node's private data: digits:I/N or FILE.toml:I/N (shard I of N).")],
    home: Annotated[Path, typer.Option(help="Folder for its model store and published test cases.")] = Path(
        "runs/node"
    ),
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8600,
    peers: Annotated[str, typer.Option(help="Other nodes' URLs, comma-separated.")] = "",
    public_url: Annotated[
        str | None, typer.Option(help="URL others reach this node at (default http://HOST:PORT).")
    ] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the data split and the genesis model.")] = 42,
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration of the label split.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of this node's training and test draws.")] = 42,
    rounds: Annotated[int | None, typer.Option(help="Stop once this many rounds have settled.")] = None,
    local_epochs: Annotated[int, typer.Option(help="Epochs of local training per model (0: pass the parent on).")] = 1,
    fhe: Annotated[str, typer.Option(help="on: score and be scored on encrypted models (all nodes alike).")] = "off",
    rechecks: Rechecks = 0,
    post_commitments: Annotated[
        bool, typer.Option(help="Also send commitments straight to the contract: no commit miner can omit them.")
    ] = False,
    behave: Annotated[
        str,
        typer.Option(help="For experiments: honest, or a dishonest kind (lying_tester, copier, …; docs/attacks.md)."),
    ] = "honest",
    group: Annotated[
        str, typer.Option(help="With --behave: the participant indices of its group, comma-separated.")
    ] = "",
    verbose: Annotated[bool, typer.Option("--verbose", help="Log each step.")] = False,
) -> None:
    """Run one participant: its key, its data, its model store, an HTTP server and the contract."""
    from derelayl.agents.relay import MAX_RECHECKS
    from derelayl.node.runner import DataSpec, NodeOptions, run_node

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        if not 0 < port < 65536:
            raise DerelaylError(f"--port must be in 1..65535, got {port}")
        if not 0 <= local_epochs <= 1000:
            raise DerelaylError(f"--local-epochs must be in 0..1000, got {local_epochs}")
        if not 0 <= rechecks <= MAX_RECHECKS:
            raise DerelaylError(f"--rechecks must be in 0..{MAX_RECHECKS}, got {rechecks}")
        if rechecks and fhe != "on":
            raise DerelaylError("--rechecks needs --fhe on")
        options = NodeOptions(
            key=key,
            home=home,
            rpc=rpc,
            contract=contract,
            data=DataSpec.parse(data, split_seed, alpha, on_off(fhe, "--fhe")),
            host=host,
            port=port,
            peers=tuple(p for p in peers.split(",") if p),
            seed=seed,
            rounds=rounds,
            public_url=public_url,
            local_epochs=local_epochs,
            post_commitments=post_commitments,
            behave=behave,
            group=_group(behave, group),
            rechecks=rechecks,
        )
        run_node(options)
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    console.print("node stopped")


def _group(behave: str, text: str) -> frozenset[int]:
    from derelayl.agents.adversaries import BRAIN_KINDS, HONEST

    if behave != HONEST and behave not in BRAIN_KINDS:
        raise DerelaylError(f"--behave must be honest or one of {', '.join(BRAIN_KINDS)}, got {behave!r}")
    try:
        members = frozenset(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise DerelaylError(f"--group must be participant indices separated by commas, got {text[:40]!r}") from None
    if any(not 0 <= m < 1024 for m in members):
        raise DerelaylError("--group: participant indices are in 0..1023")
    return members


def devnet(
    nodes: Annotated[int, typer.Option(help="Node processes (participants).")] = 8,
    rounds: Annotated[int, typer.Option(help="Rounds to settle.")] = 10,
    task: Annotated[
        str,
        typer.Option(help="digits, or an experiment config .toml (its data, model and training; plugins too)."),
    ] = "digits",
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the chain, nodes, logs and results.")] = Path(
        "runs/devnet"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the split, the genesis model and the training draws.")] = 42,
    base_port: Annotated[int, typer.Option(help="Node i serves on base-port + i.")] = 8700,
    block_time: Annotated[float, typer.Option(help="Seconds between the chain's empty blocks.")] = 0.5,
    phase_timeout: Annotated[int, typer.Option(help="Blocks before anyone may produce a silent miner's phase.")] = 40,
    local_epochs: Annotated[int, typer.Option(help="Epochs of local training per model (0: protocol only).")] = 1,
    chain: Annotated[
        str, typer.Option(help="anvil, embedded (py-evm over JSON-RPC, in memory) or auto (anvil if installed).")
    ] = "auto",
    min_improvement: Annotated[
        int | None,
        typer.Option(help="Improvement rule: test cases a child must gain over its parent to be selected (off)."),
    ] = None,
    testers: Annotated[int, typer.Option(help="Testers per round; models are ranked by their median.")] = 1,
    pooled_cases: Annotated[
        bool, typer.Option(help="Testers score on all testers' cases (fetched from their nodes).")
    ] = False,
    copy_rule: Annotated[
        bool, typer.Option(help="Copy rule (needs --min-improvement): a child must also beat its nearest live model.")
    ] = False,
    improvement_z: Annotated[
        int,
        typer.Option(
            help="Sign test (needs --min-improvement), in hundredths of a standard deviation: a child's lead over its "
            "parent must be at least this many sd of the cases the two split (100 = 1 sd; 0: off)."
        ),
    ] = 0,
    appeal_testers: Annotated[
        int,
        typer.Option(help="Appeals (needs --pooled-cases): when testers disagree, this many others re-score (0: off)."),
    ] = 0,
    case_commitments: Annotated[
        bool, typer.Option(help="Testers commit to their test cases' digest in the deposit block.")
    ] = False,
    tester_stake: Annotated[
        str,
        typer.Option(help="Tester stake in coins (needs --appeal-testers): testers must hold it; a liar forfeits it."),
    ] = "0",
    challenge_bond: Annotated[
        str,
        typer.Option(
            help="Challenge bond in coins (needs --appeal-testers): a trainer whose model's published score is wrong "
            "stakes it to open the appeal (0: no challenges)."
        ),
    ] = "0",
    challenge_window: Annotated[
        int | None,
        typer.Option(help="Blocks an unchallenged round waits before it settles (with --challenge-bond: 10)."),
    ] = None,
    post_commitments: Annotated[
        bool, typer.Option(help="Nodes also send commitments straight to the contract (no miner can omit them).")
    ] = False,
    adversaries: Annotated[
        str,
        typer.Option(help='Dishonest nodes, drawn from the seed: "lying_tester=0.25,copier=0.1" (docs/attacks.md).'),
    ] = "",
    fhe: Annotated[str, typer.Option(help="on: testers score encrypted models (CKKS; quad-activation MLP).")] = "off",
    rechecks: Rechecks = 0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress display.")] = False,
) -> None:
    """A network of node processes on this machine: chain, contract, one node per participant."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from derelayl.node.devnet import DevnetConfig, run_devnet
    from derelayl.sim.config import parse_coins

    if fhe not in ("on", "off"):
        raise fail(f"--fhe must be on or off, got {fhe!r}")
    try:
        stake = parse_coins(tester_stake, "--tester-stake")
        bond = parse_coins(challenge_bond, "--challenge-bond")
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    config = DevnetConfig(
        nodes=nodes,
        rounds=rounds,
        seed=seed,
        task=task,
        base_port=base_port,
        block_time=block_time,
        phase_timeout=phase_timeout,
        local_epochs=local_epochs,
        chain=chain,
        min_improvement=min_improvement,
        testers=testers,
        pooled_cases=pooled_cases,
        copy_rule=copy_rule,
        improvement_z=improvement_z,
        appeal_testers=appeal_testers,
        case_commitments=case_commitments,
        tester_stake=stake,
        challenge_bond=bond,
        challenge_window=challenge_window,
        post_commitments=post_commitments,
        adversaries=adversaries,
        fhe=fhe == "on",
        rechecks=rechecks,
    )

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the devnet as Ctrl-C does: every process, cleanly

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        config.validate()
        with Progress(
            TextColumn("[bold]round"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
        ) as progress:
            bar = progress.add_task("", total=rounds)

            def on_round(state: object, line: str) -> None:
                done = int(state.round)  # type: ignore[attr-defined]
                progress.update(bar, completed=done)
                if not quiet:
                    progress.console.print(f"[dim]round {done:>4}[/]  {line}", highlight=False)

            def on_status(text: str) -> None:
                progress.update(bar, description=text)

            summary = run_devnet(config, out_dir, on_round, on_status)
    except KeyboardInterrupt:
        console.print("stopped: every node and the chain were shut down; rerun on the same --out to resume")
        raise typer.Exit(130) from None
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    finally:
        signal.signal(signal.SIGTERM, previous)
    acc = summary["accuracy_per_round"]
    challenged = sorted({c["round"] for c in summary["challenges"]})
    out.print(
        f"settled {summary['rounds']} rounds with {nodes} nodes in {summary['wall_seconds']} s; "
        f"top model accuracy {acc[-1]:.3f}; contract {summary['contract']}"
        + (f"; rounds challenged: {', '.join(map(str, challenged))}" if challenged else "")
        + f"\nresults in {out_dir}/"
    )
