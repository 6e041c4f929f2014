"""Backtests: replay a trace through the forecaster and planner against simulated replicas with cold starts,
next to the policies teams use today and an oracle."""
