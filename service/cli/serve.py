"""`prewarm serve`: the service for a config file, or the embedded demo in accelerated time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.common import fail, guard, out
from service.cli.options import BackendOpt, RayAddressOpt, WorkersOpt


def serve_command(
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML config (config.example.yaml); none: the embedded demo."),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: 127.0.0.1 / config).")
    ] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default: 8080 / config).")] = None,
    speed: Annotated[
        float | None,
        typer.Option(min=1.0, max=3600.0, help="Demo only: simulated s per real s. (default: 60, 1 h/min)"),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL of the decision store. (default: the config's / prewarm-demo.db)"),
    ] = None,
    api_token: Annotated[
        str | None,
        typer.Option("--api-token", envvar="PREWARM_API_TOKEN", help="Bearer token for POSTs."),
    ] = None,
    backend: BackendOpt = None,
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
    print_config: Annotated[
        bool,
        typer.Option("--print-config", help="With --config: print the configuration in force and exit."),
    ] = False,
) -> None:
    """Run the service (API, dashboard, scheduler) for a config, or the embedded demo in accelerated time.
    With --config, every flag overrides the config (flag > PREWARM_* environment > file > default)."""
    from service.serve import serve, serve_config

    if config is not None:
        if speed is not None:
            fail("--speed applies to the demo only: a configured service runs on the wall clock")
        overrides = {
            "api.host": host,
            "api.port": port,
            "api.token": api_token,
            "store.url": store,
            "compute.backend": "ray" if ray_address is not None and backend is None else backend,
            "compute.workers": workers,
            "compute.ray_address": ray_address,
        }
        given = {k: v for k, v in overrides.items() if v is not None}
        if print_config:
            guard(lambda: _print_config(config, given))
            return
        guard(lambda: serve_config(config, overrides=given))
        return
    if print_config:
        fail("--print-config needs --config (the demo has no configuration file)")
    if backend or workers or ray_address:
        fail("--backend, --workers and --ray-address apply to a --config service (the demo runs in-process)")
    h, p = host or "127.0.0.1", port or 8080
    speed = 60.0 if speed is None else speed
    out.print(f"prewarm demo on http://{h}:{p}/ ({speed:g}x time)", highlight=False)
    serve(host=h, port=p, speed=speed, store_url=store or "sqlite:///prewarm-demo.db", api_token=api_token)


def _print_config(path: Path, overrides: dict[str, Any]) -> None:
    """The file, the PREWARM_* environment and the flags merged, every default filled in, secrets hidden."""
    import os

    import yaml

    from service.config import load_config

    cfg = load_config(path, os.environ, overrides)
    out.print(yaml.safe_dump(cfg.redacted(), sort_keys=False), highlight=False, soft_wrap=True, end="")
