"""`prewarm backtest` flags that were refused or silently ignored, and the shape that keeps the CLI a thin
shell (one module per command, each short)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from forecaster.sources.trace import read_trace
from service.cli import app

runner = CliRunner()
CLI = Path(__file__).resolve().parent.parent / "service" / "cli"


@pytest.fixture(scope="module")
def day_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("trace") / "day.csv"
    r = runner.invoke(app, ["demo-trace", str(p), "--days", "1", "--step", "10m"])
    assert r.exit_code == 0, r.output
    return p


@pytest.mark.parametrize(
    "zero", [pytest.param("0", id="0"), pytest.param("0s", id="0s"), pytest.param("0d", id="0d")]
)
def test_a_short_trace_is_replayed_from_its_start_with_a_warm_up_of_nothing(
    day_trace: Path, zero: str
) -> None:
    args = ["backtest", str(day_trace), "-s", "chat-large", "--warmup", zero]
    r = runner.invoke(app, [*args, "--policies", "reactive,predictive", "--model", "profile", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)["series"]["chat-large"]
    every_request = read_trace(day_trace).load("chat-large").values.sum()
    assert doc["reactive"]["requests"] == doc["predictive"]["requests"] == every_request


def test_a_negative_warm_up_is_still_refused(day_trace: Path) -> None:
    r = runner.invoke(app, ["backtest", str(day_trace), "-s", "chat-large", "--warmup", "-1h"])
    assert r.exit_code == 2 and "--warmup '-1h' is not a duration" in " ".join(r.output.split())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(
            ["--sweep-warm-pool", "0..4"],
            "--sweep-warm-pool sizes the static policy's warm pool: add static to --policies",
            id="sweep",
        ),
        pytest.param(
            ["--warm-pool", "3"], "--warm-pool sizes the static policy's warm pool: add static", id="one-pool"
        ),
    ],
)
def test_a_warm_pool_without_the_static_policy_is_refused_with_the_reason(
    day_trace: Path, flags: list[str], message: str
) -> None:
    r = runner.invoke(app, ["backtest", str(day_trace), "-s", "chat-large", "--policies", "reactive", *flags])
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())
    assert "Traceback" not in r.output


def test_the_help_says_a_pool_sweep_needs_the_static_policy() -> None:
    r = runner.invoke(app, ["backtest", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "e.g. 0..8 or 0,2,4 (needs static in --policies)" in " ".join(r.output.split())


def _functions(tree: ast.Module) -> list[ast.FunctionDef]:
    return [n for n in tree.body if isinstance(n, ast.FunctionDef)]


def test_the_cli_is_a_thin_shell_of_short_modules_and_commands() -> None:
    paths = sorted(CLI.glob("*.py"))
    commands = {"forecast", "evaluate", "backtest", "tune", "serve", "export", "models", "demo_trace"}
    assert commands <= {p.stem for p in paths}, "one module per command"
    for path in paths:
        text = path.read_text()
        assert len(text.splitlines()) <= 250, f"{path.name} has {len(text.splitlines())} lines; allowed 250"
        for fn in _functions(ast.parse(text)):
            n = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            assert n <= 80, f"{path.name}: {fn.name} has {n} lines; allowed 80"


def test_no_option_help_loses_words_to_the_terminal_markup() -> None:
    """Typer renders help through Rich, which swallows a bracketed `[default: x]` as a markup tag (`Address
    to listen on .`): every option's help is printed whole."""
    import typer.main

    commands = getattr(typer.main.get_command(app), "commands", {})
    assert len(commands) >= 8
    for name, command in commands.items():
        r = runner.invoke(app, [name, "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
        assert r.exit_code == 0, r.output
        shown = " ".join(r.output.replace("│", " ").split())
        for param in command.params:
            help_text = getattr(param, "help", None)
            if help_text:
                assert " ".join(help_text.split()) in shown, f"prewarm {name} {param.name}: {help_text!r}"


def test_a_table_piped_into_a_file_is_printed_whole() -> None:
    """Rich fits a table to 80 columns when stdout is not a terminal: the nightly job's log and `| tee` got
    numbers cut short ("1,254,81…")."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    run = subprocess.run(
        [sys.executable, "-m", "service", "backtest", "--demo", "-s", "chat-large"],
        capture_output=True,
        text=True,
        env=env,
        cwd=CLI.parent.parent,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "…" not in run.stdout, run.stdout
    assert max(len(line) for line in run.stdout.splitlines()) > 80  # wider than a terminal's default
