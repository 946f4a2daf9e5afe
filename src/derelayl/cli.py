"""Command line: parsing and display only; the work happens in the packages it calls."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from derelayl.errors import ChainIntegrityError, DerelaylError
from derelayl.terminal import Rechecks, console, fail, on_off

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="DeRelayL: sustainable decentralized relay learning."
)
out = Console()


@app.command()
def run(
    participants: Annotated[
        int | None, typer.Option(help="Participants (default: 64 latent, 20 digits, a config's own).")
    ] = None,
    rounds: Annotated[int, typer.Option(help="Rounds to settle (a resumed run continues up to this).")] = 50,
    seed: Annotated[int, typer.Option(help="Seed: same seed and settings give the same chain head hash.")] = 42,
    out_dir: Annotated[Path, typer.Option("--out", help="Results folder (chain.sqlite, summary.json).")] = Path(
        "runs/run"
    ),
    task: Annotated[
        str,
        typer.Option(
            help="digits (real PyTorch relay training), latent (the paper's abstract model), or an experiment "
            "config .toml (its data, model and training: built-in or your own plugins)."
        ),
    ] = "digits",
    preset: Annotated[str, typer.Option(help="Protocol parameter preset: reference or minimal.")] = "reference",
    ledger: Annotated[
        str, typer.Option(help="sqlite (a signed local chain) or evm (the Vyper contract on an Ethereum node).")
    ] = "sqlite",
    rpc: Annotated[
        str | None,
        typer.Option(
            help="With --ledger evm: a JSON-RPC URL, or 'anvil' to start our own (its chain kept in OUT). "
            "Default: the embedded py-evm."
        ),
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="With --rpc URL: private key (hex or file) that pays participants' gas.")
    ] = None,
    chain_randomness: Annotated[
        bool, typer.Option(help="With --ledger evm: mix the chain's prevrandao into the beacon.")
    ] = True,
    min_improvement: Annotated[
        int | None,
        typer.Option(help="Improvement rule: score units (test cases) a child must gain over its parent (off)."),
    ] = None,
    testers: Annotated[int | None, typer.Option(help="Testers per round (the preset's: 1).")] = None,
    pooled_cases: Annotated[
        bool | None, typer.Option("--pooled-cases/--no-pooled-cases", help="Testers score on all testers' cases.")
    ] = None,
    copy_rule: Annotated[
        bool | None,
        typer.Option(
            "--copy-rule/--no-copy-rule",
            help="Copy rule (needs --min-improvement): a child must also beat the live model it predicts most like.",
        ),
    ] = None,
    improvement_z: Annotated[
        int | None,
        typer.Option(
            help="Sign test (needs --min-improvement), in hundredths of a standard deviation: a child's lead over its "
            "parent must be at least this many sd of the cases the two split (100 = 1 sd; 0: off)."
        ),
    ] = None,
    appeal_testers: Annotated[
        int | None,
        typer.Option(
            help="Appeals (needs --pooled-cases): when testers disagree, this many others re-score the pool "
            "and decide; testers off their median forfeit their reward (off)."
        ),
    ] = None,
    case_commitments: Annotated[
        bool | None,
        typer.Option(
            "--case-commitments/--no-case-commitments",
            help="Testers commit to their test cases' digest in the deposit block, before any new model exists.",
        ),
    ] = None,
    tester_stake: Annotated[
        str | None,
        typer.Option(
            help="Tester stake in coins (needs --appeal-testers): testers are drawn from the miners holding it, "
            "and a tester off the appeal's median forfeits it (off)."
        ),
    ] = None,
    challenge_bond: Annotated[
        str | None,
        typer.Option(
            help="With --ledger evm and --appeal-testers: coins a challenge stakes. A trainer whose model's published "
            "score is wrong challenges the round straight on the contract, which opens the appeal (off)."
        ),
    ] = None,
    challenge_window: Annotated[
        int | None,
        typer.Option(help="Blocks an unchallenged round waits before it settles (with --challenge-bond: 5)."),
    ] = None,
    post_commitments: Annotated[
        bool,
        typer.Option(help="With --ledger evm: trainers also send commitments straight to the contract."),
    ] = False,
    fhe: Annotated[
        str,
        typer.Option(
            help="on: testers score encrypted models (CKKS; the model becomes a quad-activation MLP); "
            "off: in the clear."
        ),
    ] = "off",
    rechecks: Rechecks = 0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress display.")] = False,
) -> None:
    """Run a DeRelayL network (one agent per key) on a signed SQLite chain or on the contract;
    resumes if OUT holds one."""
    from derelayl.runtime.local import RunConfig, run_network
    from derelayl.runtime.tasks import default_participants, make_task
    from derelayl.sim.config import parse_coins

    try:
        n = participants if participants is not None else default_participants(task)
        config = RunConfig(
            participants=n,
            rounds=rounds,
            seed=seed,
            task=task,
            preset=preset,
            ledger=ledger,
            rpc=rpc,
            chain_randomness=chain_randomness,
            min_improvement=min_improvement,
            testers=testers,
            pooled_cases=pooled_cases,
            copy_rule=copy_rule,
            improvement_z=improvement_z,
            appeal_testers=appeal_testers,
            case_commitments=case_commitments,
            tester_stake=None if tester_stake is None else parse_coins(tester_stake, "--tester-stake"),
            challenge_bond=None if challenge_bond is None else parse_coins(challenge_bond, "--challenge-bond"),
            challenge_window=challenge_window,
            post_commitments=post_commitments,
            fhe=on_off(fhe, "--fhe"),
            rechecks=rechecks,
        )
        config.validate()  # bad options stop here, before the progress display or any file
        config.params()
        funder = None
        if key is not None:
            from derelayl.evm.tools import parse_key

            funder = parse_key(key)
        every = max(1, rounds // 25)  # a stats line for about 25 of the rounds, the bar for all
        with Progress(
            TextColumn("[bold]round"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
        ) as progress:
            bar = progress.add_task("", total=rounds)

            def on_round(state: object, line: str) -> None:
                done = int(state.round)  # type: ignore[attr-defined]
                progress.update(bar, completed=done)
                if not quiet and (done % every == 0 or done == rounds):
                    progress.console.print(f"[dim]round {done:>4}[/]  {line}", highlight=False)

            summary = run_network(config, out_dir, make_task, on_round, funder=funder)
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    q = summary["balance_quantiles_coins"]
    out.print(
        f"settled {summary['rounds']} rounds ({summary['height']} blocks) in {summary['wall_seconds']} s; "
        f"supply {summary['money']['supply']} coins; balances p10 {q['p10']:.3f} p50 {q['p50']:.3f} "
        f"p90 {q['p90']:.3f}\nhead {summary['head_hash']}\nresults in {out_dir}/"
    )
    if summary.get("ledger", {}).get("contract"):
        info = summary["ledger"]
        out.print(f"contract {info['contract']} on chain {info['chain_id']} ({info['backend']}): history verified")


@app.command()
def verify(
    chain: Annotated[
        Path | None, typer.Argument(help="A chain.sqlite file, or the folder of a run on an EVM node.")
    ] = None,
    rpc: Annotated[str | None, typer.Option(help="JSON-RPC URL of the node holding the contract.")] = None,
    contract: Annotated[str | None, typer.Option(help="Address of the DeRelayL contract.")] = None,
    chain_id: Annotated[int | None, typer.Option(help="Refuse a node on another chain.")] = None,
) -> None:
    """Replay a chain (or a contract's history) with the rules: exit 0 if every block is valid,
    1 at the first bad block."""
    from derelayl.evm.cli import contract_target
    from derelayl.ledger.chain import Chain
    from derelayl.ledger.sqlite import SQLiteLedger

    try:
        target = contract_target(chain, rpc, contract, chain_id)
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    if target is not None:
        _verify_contract(*target)
        return
    if chain is None:
        raise fail("give a chain.sqlite file, a run folder, or --rpc URL --contract ADDRESS")
    if chain.is_dir() and (chain / "chain.sqlite").is_file():
        chain = chain / "chain.sqlite"  # a run folder
    try:
        ledger = SQLiteLedger(chain, create=False)
        result = Chain.open(ledger)
    except ChainIntegrityError as exc:
        out.print(f"INVALID at block {exc.height}: {exc.reason}")
        raise typer.Exit(1) from exc
    except DerelaylError as exc:
        out.print(f"INVALID: {exc}")
        raise typer.Exit(1) from exc
    bad = _bad_model_files(chain.parent / "models")
    if bad:
        out.print(f"INVALID: {len(bad)} model file(s) do not hash to their name, e.g. models/{bad[0]}")
        raise typer.Exit(1)
    out.print(f"valid: {result.height} blocks, round {result.state.round}, head {result.head_hash.hex()}")


def _bad_model_files(folder: Path) -> list[str]:
    """Model files beside a chain (``<sha256>.safetensors``) whose bytes hash to another name."""
    import hashlib

    if not folder.is_dir():
        return []
    return [
        p.name
        for p in sorted(folder.glob("*.safetensors"))
        if hashlib.sha256(p.read_bytes()).hexdigest() != p.name.removesuffix(".safetensors")
    ]


def _verify_contract(node: object, address: str) -> None:
    from derelayl.evm.client import ContractClient
    from derelayl.evm.tools import verify_contract

    try:
        report = verify_contract(ContractClient(node, address))  # type: ignore[arg-type]
    except ChainIntegrityError as exc:
        out.print(f"INVALID at EVM block {exc.height}: {exc.reason}")
        raise typer.Exit(1) from exc
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    finally:
        node.close()  # type: ignore[attr-defined]
    posted = f", {report['posted_commitments']} commitments posted to it" if report["posted_commitments"] else ""
    rounds = ", ".join(str(c["round"]) for c in report["challenges"])
    challenged = f", rounds challenged: {rounds}" if rounds else ""
    out.print(
        f"valid: {report['blocks']} blocks, round {report['round']}, contract {report['contract']} on chain "
        f"{report['chain_id']}, head block {report['head_block']}{posted}{challenged}"
    )


@app.command()
def inspect(
    chain: Annotated[
        Path | None, typer.Argument(help="A chain.sqlite file, or the folder of a run on an EVM node.")
    ] = None,
    blocks: Annotated[int, typer.Option(min=0, max=100_000, help="Show the last N blocks.")] = 8,
    model: Annotated[int | None, typer.Option(min=0, help="Show the lineage of this model id.")] = None,
    top: Annotated[int, typer.Option(min=0, max=100_000, help="Show the N richest participants.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    rpc: Annotated[str | None, typer.Option(help="JSON-RPC URL of the node holding the contract.")] = None,
    contract: Annotated[str | None, typer.Option(help="Address of the DeRelayL contract.")] = None,
    chain_id: Annotated[int | None, typer.Option(help="Refuse a node on another chain.")] = None,
) -> None:
    """Blocks, balances and the lineage of a model (of a local chain or a contract)."""
    from derelayl.evm.cli import contract_target
    from derelayl.ledger.inspect import inspect_chain

    try:
        target = contract_target(chain, rpc, contract, chain_id)
        if target is not None:
            from derelayl.evm.tools import inspect_contract

            node, address = target
            try:
                report = inspect_contract(node, address, last_blocks=blocks, model=model, top=top)
            finally:
                node.close()
        elif chain is None:
            raise fail("give a chain.sqlite file, a run folder, or --rpc URL --contract ADDRESS")
        else:
            report = inspect_chain(chain, last_blocks=blocks, model=model, top=top)
    except DerelaylError as exc:
        raise fail(str(exc), 1) from exc
    if as_json:
        out.print_json(json.dumps(report))
        return
    table = Table(title=f"last {len(report['blocks'])} of {report['height']} blocks")
    for column in ("height", "round", "kind", "miner", "items", "hash"):
        table.add_column(column)
    for b in report["blocks"]:
        table.add_row(str(b["height"]), str(b["round"]), b["kind"], str(b["miner"]), str(b["items"]), b["hash"][:16])
    out.print(table)
    money = report["money"]
    out.print(f"supply {money['supply']} = minted {money['minted']} - burned {money['burned']} coins")
    richest = Table(title=f"top {top} balances")
    richest.add_column("participant")
    richest.add_column("key")
    richest.add_column("coins", justify="right")
    for row in report["richest"]:
        richest.add_row(str(row["participant"]), row["key"][:16], row["coins"])
    out.print(richest)
    if report.get("lineage") is not None:
        chain_text = " <- ".join(f"#{m['model']} (v{m['version']}, owner {m['owner']})" for m in report["lineage"])
        out.print(f"lineage of model {model}: {chain_text}")


@app.command()
def audit(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder of real models (derelayl run --task digits|FILE.toml).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="The findings as JSON.")] = False,
) -> None:
    """Re-score every committed model on the test cases testers published and check every
    report: exit 0 if all re-execute, 1 if a tester reported scores they do not give."""
    from derelayl.runtime.audit import audit_run

    try:
        result = audit_run(run_dir, None if as_json else out.print)
    except ChainIntegrityError as exc:
        out.print(f"INVALID at block {exc.height}: {exc.reason}")
        raise typer.Exit(1) from exc
    except DerelaylError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
    else:
        for f in result.findings:
            out.print(f"round {f.round}: tester {f.tester} {f.what}: {f.detail}")
        out.print(
            f"{result.rounds} test blocks, {result.reports} reports: {result.checked} re-run, "
            f"{len(result.lies)} differ, {result.reports - result.checked} could not be checked"
        )
    if result.lies:
        raise typer.Exit(1)


def _register_extensions() -> None:
    """Commands that live with their packages."""
    from derelayl.evm.cli import deploy
    from derelayl.experiments.cli import attacks, compare, experiment
    from derelayl.explorer.cli import explorer
    from derelayl.node.cli import devnet, keys_app, node
    from derelayl.sim.cli import simulate

    app.command()(simulate)
    app.command()(experiment)
    app.command()(attacks)
    app.command()(compare)
    app.command()(deploy)
    app.command()(node)
    app.command()(devnet)
    app.command()(explorer)
    app.add_typer(keys_app, name="keys")


_register_extensions()


def main() -> None:
    """The ``derelayl`` entry point: every failure ends in one ``error:`` line, never a
    traceback. Exit codes: 0 done, 1 a chain or contract failed verification, 2 bad input or
    environment (options, config, files, storage), 3 an internal error (a bug: please report
    it with the command), 130 interrupted."""
    logging.basicConfig(level=logging.WARNING)
    try:
        app(standalone_mode=True)
    except DerelaylError as exc:
        raise SystemExit(fail(str(exc)).exit_code) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise SystemExit(fail(f"{where}{exc.strerror or exc}").exit_code) from None
    except MemoryError:
        raise SystemExit(fail("out of memory: reduce the size of the run").exit_code) from None
    except Exception as exc:  # a bug: one line, and how to see more
        console.print(
            f"[bold red]error:[/] internal error ({type(exc).__name__}: {str(exc)[:200]}); "
            "please report it with the command (DERELAYL_DEBUG=1 shows the traceback)",
            highlight=False,
        )
        if os.environ.get("DERELAYL_DEBUG"):
            raise
        raise SystemExit(3) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
