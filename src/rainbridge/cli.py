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
@click.option("--no-migrate", is_flag=True, help="do not migrate the store; fail if its schema is behind")
@click.option("--allow-unauthenticated-admin", is_flag=True, help="serve /api/ without an admin token (development only)")
def serve_cmd(config_path: str | None, app_dir: str, host: str, port: int, workers: int, log_level: str, server: str,
              no_migrate: bool, allow_unauthenticated_admin: bool) -> None:
    """Start the gateway."""
    setup_logging(log_level)
    opts = ServeOptions(config_path, app_dir, host, port, workers, log_level.lower(), server,
                        run_migrations=not no_migrate, allow_unauthenticated_admin=allow_unauthenticated_admin)
    sys.exit(serve(opts))


def _store_options(f):
    f = click.option("--app-dir", default="./data", show_default=True)(f)
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), help="config file (default <app-dir>/config.json)")(f)


@main.command("migrate")
@_store_options
def migrate_cmd(config_path: str | None, app_dir: str) -> None:
    """Migrate the config and logs stores to this version's schema, then exit."""
    from .store.admin import run_migrate

    setup_logging("info")
    sys.exit(run_migrate(ServeOptions(config_path, app_dir)))


@main.group("store")
def store_group() -> None:
    """Config store tools."""


@store_group.command("rotate-key")
@_store_options
@click.option("--old", envvar="RAINBRIDGE_OLD_ENCRYPTION_KEY", help="the current key (omit if the store is not encrypted yet)")
@click.option("--new", envvar="RAINBRIDGE_NEW_ENCRYPTION_KEY", required=True, help="the key to encrypt with from now on")
def rotate_key_cmd(config_path: str | None, app_dir: str, old: str | None, new: str) -> None:
    """Re-encrypt every stored secret with a new key, in one transaction."""
    from .store.admin import run_rotate_key

    setup_logging("info")
    sys.exit(run_rotate_key(ServeOptions(config_path, app_dir), old, new))


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
