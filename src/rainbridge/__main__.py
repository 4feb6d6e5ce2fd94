"""``python -m rainbridge``."""

from .cli import main

main()
