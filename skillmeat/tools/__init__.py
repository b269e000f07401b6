"""Implementations of the `skillmeat-db` commands beyond upgrade/current."""


class CommandError(Exception):
    """A failure the user can act on; `skillmeat-db` prints it as one line and exits 1."""
