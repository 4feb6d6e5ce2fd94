"""`python -m rainbridge.mock --host H --port P`: the fake provider as its own process."""

from __future__ import annotations

import argparse

from .provider import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rainbridge.mock", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port to bind; 0 picks a free one (default 8765)"
    )
    args = parser.parse_args(argv)
    run(args.host, args.port)


if __name__ == "__main__":
    main()
