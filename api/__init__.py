"""The REST API (FastAPI): read-only views of models, forecasts, decisions and backtests, plus a few
token-protected switches. It reads through the narrow port in `ports.py` and never imports actuators or the
scheduler."""
