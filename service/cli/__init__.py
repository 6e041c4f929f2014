"""The `prewarm` command line: one module per command, each parsing its flags, calling the one function of
the package that owns the work and printing what comes back.

Every failure a user can cause (a bad trace, an unknown series, a bad duration) ends in one line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import typer

from service.cli import backtest, demo_trace, evaluate, export, forecast, models, serve, tune

app = typer.Typer(
    name="prewarm",
    help="Predictive pre-warming autoscaler for ML model serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# in the order `prewarm --help` lists them
app.command()(forecast.forecast)
app.command()(evaluate.evaluate)
app.command()(backtest.backtest)
app.command()(tune.tune)
app.command("export-openmetrics")(export.export_openmetrics)
app.command("models")(models.list_models)
app.command("demo-trace")(demo_trace.demo_trace)
app.command("serve")(serve.serve_command)


def main() -> None:
    app()


__all__ = ["app", "main"]
