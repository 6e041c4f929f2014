"""Backtests: replay a trace through the forecaster and planner against simulated replicas with cold starts,
next to the policies teams use today and an oracle.

The modules have a direction (pyproject.toml's import-linter contract keeps it), each importing only from
those below it: simulator and records (the walk-forward's results); policies; run (the replay of one series
through every policy); tuning; walk_forward; fleet and ledger (the nightly day ledger); tasks (what a compute
worker runs) and report; batch (what `prewarm backtest` and `prewarm tune` call) on top."""
