"""`skillmeat-db ...`: not implemented yet."""

import argparse

from skillmeat.tools import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> None:
    raise CommandError("not implemented yet")
