"""`skillmeat-db`: deploy (upgrade), gate a deploy (current), and the DBA and newcomer tools.

Every failure is one line on stderr, `skillmeat-db <command>: <reason>`, never a
traceback. `current` exits 0 only at head: 1 behind, 2 at a revision this code does
not know, 3 when it could not tell (an error).
"""

import argparse
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from alembic.util.exc import CommandError as AlembicCommandError
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from skillmeat.core.database.migrations import (
    SchemaState,
    configured_url,
    head_revision,
    schema_status,
    upgrade,
)
from skillmeat.core.database.provision import create_database, database_exists
from skillmeat.core.database.settings import DEFAULT_DATABASE_URL
from skillmeat.core.errors import SkillmeatError, ValidationFailed
from skillmeat.tools import CommandError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BEHIND, EXIT_UNKNOWN, EXIT_CURRENT_FAILED = 1, 2, 3
URL_DEFAULT = f"$SKILLMEAT_DATABASE_URL, else {DEFAULT_DATABASE_URL}"
# What the failing command was and which URL it used, for the one-line error.
_RUN: dict[str, Any] = {"command": None, "url": None}


def url_option(func: F) -> F:
    """--url, accepted before or after the command (`skillmeat-db current --url URL`)."""
    return click.option(
        "--url",
        metavar="URL",
        default=None,
        show_default=URL_DEFAULT,
        help="database URL; postgres:// and postgresql:// are read as postgresql+psycopg://",
    )(func)


class _Root(click.Group):
    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        _RUN["command"] = name
        return name, command, rest


@click.group(
    cls=_Root, context_settings={"show_default": True, "help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="skillmeat", prog_name="skillmeat-db")
@url_option
@click.pass_context
def cli(ctx: click.Context, url: str | None) -> None:
    """SkillMeat marketplace database tools."""
    ctx.obj = {"url": url}


def _url(url: str | None) -> URL:
    """The command's --url, else the one given before the command, else settings."""
    ctx = click.get_current_context()
    given = url or ctx.find_root().obj.get("url")
    _RUN["url"] = given
    resolved = configured_url(given)
    _RUN["url"] = resolved
    return resolved


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _args(url: URL, **options: Any) -> argparse.Namespace:
    """The tools' calling convention: one namespace with the URL and their options."""
    return argparse.Namespace(url=url.render_as_string(hide_password=False), **options)


# --- deploy -------------------------------------------------------------------------


@cli.command("upgrade")
@url_option
def upgrade_command(url: str | None) -> None:
    """Create the database if it does not exist, then migrate it to head."""
    target = _url(url)
    head_revision()  # the scripts are there, before anything is created
    if database_exists(target):
        click.echo(f"database {target.database!r} exists on {_shown(target)}")
    else:
        create_database(target)
        click.echo(f"created database {target.database!r} on {_shown(target)}")
    before = schema_status(target).current
    said = upgrade(target)
    after = schema_status(target).current
    if before == after:
        click.echo(f"already at head ({after}); nothing to do")
    else:
        click.echo(f"migrated {before or 'empty database'} -> {after} (head)")
    if said:
        click.echo(said)


@cli.command("current")
@url_option
def current_command(url: str | None) -> int:
    """Show the database's revision; exit 0 at head, 1 behind, 2 unknown revision, 3 error."""
    target = _url(url)
    if not database_exists(target):
        click.echo(
            f"{target.database}: no such database on {_shown(target)} "
            "(run `skillmeat-db upgrade` to create it)"
        )
        return EXIT_BEHIND
    status = schema_status(target)
    revision = status.current or "none (empty database)"
    if status.state is SchemaState.AT_HEAD:
        click.echo(f"{target.database}: revision {revision} (at head)")
        return 0
    if status.state is SchemaState.UNKNOWN:
        click.echo(
            f"{target.database}: revision {revision} (unknown to this code, whose head is "
            f"{status.head}: is the database newer than the code? deploy the newer "
            "skillmeat, or `pip install -U skillmeat`)"
        )
        return EXIT_UNKNOWN
    click.echo(
        f"{target.database}: revision {revision} (behind head {status.head}: "
        "run `skillmeat-db upgrade`)"
    )
    return EXIT_BEHIND


# --- tools (imported when run: the demo data and benchmarks stay off the import path) ---


@cli.command("explain")
@url_option
@click.option(
    "--user-id",
    type=click.UUID,
    default=None,
    show_default="the first member of a project with entries",
    help="member to run the paths as",
)
@click.option("--plans", is_flag=True, help="also print each plan tree (under RLS and without)")
def explain_command(url: str | None, user_id: uuid.UUID | None, plans: bool) -> None:
    """Run each named query path as the app role and show its plan."""
    from skillmeat.tools import explain

    explain.run(_args(_url(url), user_id=user_id, plans=plans))


@cli.group("bench")
def bench() -> None:
    """Measure the query paths or the catalog sync."""


@bench.command("queries")
@url_option
@click.option("--entries", type=int, default=1_000_000, help="catalog entries to generate")
@click.option("--sources", type=int, default=20_000, help="sources to generate")
@click.option("--projects", type=int, default=2_000, help="projects to generate")
@click.option("--repeat", type=int, default=500, help="measured runs per path and side")
@click.option("--warmup", type=int, default=30, help="unmeasured runs per path first")
@click.option("--users", type=int, default=20, help="members sampled, each on its largest source")
@click.option(
    "--prepare-threshold",
    type=int,
    default=None,
    help="prepare statements server-side on this use (psycopg's default is 5); default: never, "
    "as the library runs",
)
@click.option(
    "--scaling-entries",
    type=int,
    default=10_000,
    help="size of the small database path 3 is compared against (0: skip)",
)
@click.option(
    "--keep",
    metavar="NAME",
    default=None,
    help="build the dataset in a new database NAME and keep it (for `explain` on it)",
)
@click.option(
    "--existing", is_flag=True, help="measure the configured database as it is (no dataset)"
)
def bench_queries_command(url: str | None, **options: Any) -> None:
    """Median time of each path under RLS vs an explicit filter."""
    from skillmeat.tools import bench_queries

    bench_queries.run(_args(_url(url), **options))


@bench.command("sync")
@url_option
@click.option("--artifacts", type=int, default=20_000, help="artifacts per scan")
@click.option("--rounds", type=int, default=7, help="measured rounds (after one warm-up)")
@click.option(
    "--existing",
    is_flag=True,
    help="use the configured database (migrated) instead of a throwaway one",
)
@click.option("--seed", type=int, default=7, help="seed of the generated scans")
def bench_sync_command(url: str | None, **options: Any) -> None:
    """sync_catalog (first sync; identical, 1% and 10% rescans) against COPY: time, WAL, rows."""
    from skillmeat.tools import bench_sync

    bench_sync.run(_args(_url(url), **options))


@bench.command("requests")
@url_option
@click.option(
    "--rounds", type=click.IntRange(min=1), default=2_000, help="measured requests per engine"
)
@click.option(
    "--warmup", type=click.IntRange(min=0), default=50, help="unmeasured requests per engine first"
)
def bench_requests_command(url: str | None, **options: Any) -> None:
    """What request isolation costs a request: check-in reset, no prepared statements."""
    from skillmeat.tools import bench_requests

    bench_requests.run(_args(_url(url), **options))


@bench.command("search")
@url_option
@click.option("--entries", type=click.IntRange(min=1), default=1_000_000, help="entries in all")
@click.option(
    "--big", type=click.IntRange(min=1), default=300_000, help="entries the larger member sees"
)
@click.option(
    "--mid", type=click.IntRange(min=1), default=30_000, help="entries the smaller member sees"
)
@click.option(
    "--singles", default="50,500,5000", show_default=True, help="sizes of the single sources"
)
@click.option("--repeat", type=click.IntRange(min=1), default=200, help="measured runs per side")
@click.option("--warmup", type=click.IntRange(min=0), default=20, help="unmeasured runs first")
def bench_search_command(url: str | None, **options: Any) -> None:
    """Catalog search as a member (definer function) vs the superuser's explicit filter."""
    from skillmeat.tools import bench_search

    bench_search.run(_args(_url(url), **options))


@bench.command("scans")
@url_option
@click.option(
    "--history-small", type=click.IntRange(min=0), default=1_000, help="finished scans, small side"
)
@click.option(
    "--history-large",
    type=click.IntRange(min=0),
    default=1_000_000,
    help="finished scans, large side",
)
@click.option(
    "--claims", type=click.IntRange(min=1), default=500, help="measured claims per database"
)
@click.option("--warmup", type=click.IntRange(min=0), default=50, help="unmeasured claims first")
@click.option(
    "--queued", type=click.IntRange(min=1), default=10_000, help="scans the worker threads run"
)
@click.option("--threads", type=click.IntRange(min=1), default=4, help="worker threads")
def bench_scans_command(url: str | None, **options: Any) -> None:
    """The scan queue: claim latency vs history, and worker threads claiming and completing."""
    from skillmeat.tools import bench_scans

    bench_scans.run(_args(_url(url), **options))


@cli.command("rotate-token-keys")
@url_option
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=10_000),
    default=500,
    help="tokens re-encrypted per transaction",
)
def rotate_token_keys_command(url: str | None, batch_size: int) -> int:
    """Re-encrypt every source token under the first key of SKILLMEAT_TOKEN_KEYS.

    Resumable and idempotent (a transaction per batch); exits 2 when some tokens
    were left alone because their key id is not configured or they do not decrypt.
    """
    from skillmeat.tools import rotate_tokens

    report = rotate_tokens.run(_args(_url(url), batch_size=batch_size))
    return 2 if report.left_alone else 0


@cli.command("demo")
@url_option
@click.option("--keep", is_flag=True, help="keep the demo's projects")
def demo_command(url: str | None, keep: bool) -> None:
    """Two projects, two real catalogs, and what each user can see."""
    from skillmeat.tools import demo

    demo.run(_args(_url(url), keep=keep))


# --- errors as one line ---------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _reason(exc: BaseException) -> str | None:
    """The line to print for a failure the user can act on; None for a bug."""
    url = _RUN["url"]
    if isinstance(exc, CommandError):
        return str(exc)
    if isinstance(exc, ValidationFailed) and exc.field == "url":
        return f"bad database URL: {exc.reason}"
    if isinstance(exc, OperationalError):
        shown = _shown(url) if isinstance(url, URL) else str(url)
        return f"cannot use {shown}: {_one_line(exc)}"
    if isinstance(exc, DBAPIError):
        return f"database error: {_one_line(exc)}"
    if isinstance(exc, ArgumentError | NoSuchModuleError | ModuleNotFoundError):
        return f"bad database URL: {_one_line(exc)}"
    if isinstance(exc, AlembicCommandError | SkillmeatError):
        return _one_line(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    _RUN.update(command=None, url=None)
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="skillmeat-db",
            standalone_mode=False,
        )
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as usage:
        ctx = getattr(usage, "ctx", None)
        where = ctx.command_path if ctx is not None else "skillmeat-db"
        hint = f" (see `{where} --help`)" if isinstance(usage, click.UsageError) else ""
        click.echo(f"{where}: {usage.format_message()}{hint}", err=True)
        return EXIT_CURRENT_FAILED if _RUN["command"] == "current" else usage.exit_code
    except click.Abort:
        click.echo("skillmeat-db: aborted", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("skillmeat-db: interrupted", err=True)
        return 130
    except Exception as exc:
        reason = _reason(exc)
        if reason is None:
            raise
        command = _RUN["command"] or "skillmeat-db"
        click.echo(f"skillmeat-db {command}: {reason}", err=True)
        return EXIT_CURRENT_FAILED if command == "current" else 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
