"""`python -m api --markdown`: print the README's table of API routes."""

from __future__ import annotations

import argparse

from api.app import TABLES
from api.openapi import markdown


def main() -> None:
    """Print the route table as Markdown."""
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="the README's route table")
    if parser.parse_args().markdown:
        print(markdown(TABLES), end="")
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
