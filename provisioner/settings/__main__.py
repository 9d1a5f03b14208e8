"""`python -m provisioner.settings --markdown`: print the README's configuration reference."""

from __future__ import annotations

import argparse

from provisioner.settings.setting import markdown
from provisioner.settings.table import SETTINGS


def main() -> None:
    """Print the settings table as Markdown."""
    parser = argparse.ArgumentParser(prog="python -m provisioner.settings", description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="the README's settings table")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(SETTINGS), end="")
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
