"""The ``rainbridge`` command."""

from __future__ import annotations

import sys

import click

from . import __version__
from .server.run import SERVERS, ServeOptions, serve, setup_logging

LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rainbridge")
def main() -> None:
    """rainbridge: an OpenAI- and Anthropic-compatible LLM gateway."""


@main.command("serve")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="config file (default <app-dir>/config.json)")
@click.option("--app-dir", default="./data", show_default=True, help="data directory (SQLite stores, config.json)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256), help="worker processes sharing the port")
@click.option("--log-level", default="info", show_default=True, type=LOG_LEVELS)
@click.option("--server", default="uvicorn", show_default=True, type=click.Choice(SERVERS), help="HTTP server")
def serve_cmd(config_path: str | None, app_dir: str, host: str, port: int, workers: int, log_level: str, server: str) -> None:
    """Start the gateway."""
    setup_logging(log_level)
    opts = ServeOptions(config_path, app_dir, host, port, workers, log_level.lower(), server)
    sys.exit(serve(opts))


@main.command("mock-provider")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9000, show_default=True, type=click.IntRange(0, 65535))
def mock_provider_cmd(host: str, port: int) -> None:
    """Run the fake OpenAI/Anthropic/Azure provider (tests, demo, benchmarks)."""
    from .mock import run

    run(host, port)


@main.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
def demo_cmd(host: str, port: int) -> None:
    """Start the fake provider and a gateway in front of it; serve until Ctrl-C."""
    from .demo import run_demo

    setup_logging("info")
    sys.exit(run_demo(host, port))


@main.group("config")
def config_group() -> None:
    """Configuration tools."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def config_check(file: str) -> None:
    """Validate a config file; print every problem with its JSON path."""
    from .config.load import ConfigError, load_file

    try:
        loaded = load_file(file)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"{problem.severity}: {problem}")
        errors = len(exc.errors)
        click.echo(f"{file}: {errors} error(s), {len(exc.problems) - errors} warning(s)", err=True)
        sys.exit(1)
    for problem in loaded.warnings:
        click.echo(f"{problem.severity}: {problem}")
    click.echo(f"{file}: ok ({len(loaded.config.providers)} provider(s), {len(loaded.warnings)} warning(s))")


if __name__ == "__main__":
    main()
