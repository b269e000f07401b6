"""`skillmeat-db`: deploy (upgrade), inspect (current), and the DBA and newcomer tools.

Every command prints what it did and exits 1 with a one-line reason on a
database error (unreachable server, wrong credentials) rather than a traceback.
"""

import argparse
import sys
from collections.abc import Callable, Sequence

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError as AlembicCommandError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import NullPool

from skillmeat.core.database import DatabaseSettings, make_engine
from skillmeat.core.database.provision import (
    alembic_config,
    create_database,
    database_exists,
    upgrade_to_head,
)
from skillmeat.core.errors import SkillmeatError
from skillmeat.tools import CommandError


def _url(args: argparse.Namespace) -> URL:
    return make_url(args.url or DatabaseSettings().database_url)


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _current_revision(url: URL) -> str | None:
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def cmd_upgrade(args: argparse.Namespace) -> None:
    url = _url(args)
    if database_exists(url):
        print(f"database {url.database!r} exists on {_shown(url)}")
    else:
        create_database(url)
        print(f"created database {url.database!r} on {_shown(url)}")
    before = _current_revision(url)
    upgrade_to_head(url)
    after = _current_revision(url)
    if before == after:
        print(f"already at head ({after}); nothing to do")
    else:
        print(f"migrated {before or 'empty database'} -> {after} (head)")


def cmd_current(args: argparse.Namespace) -> None:
    url = _url(args)
    if not database_exists(url):
        raise CommandError(
            f"database {url.database!r} does not exist on {_shown(url)}; "
            "run `skillmeat-db upgrade` to create it"
        )
    current = _current_revision(url)
    head = _head_revision()
    known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current == head:
        state = "at head"
    elif current is not None and current not in known:
        state = f"unknown to this code, whose head is {head}: is the database newer than the code?"
    else:
        state = f"behind head {head}: run `skillmeat-db upgrade`"
    print(f"{url.database}: revision {current or 'none (empty database)'} ({state})")


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skillmeat-db", description="SkillMeat marketplace database tools."
    )
    parser.add_argument(
        "--url",
        help="database URL (default: $SKILLMEAT_DATABASE_URL or the local skillmeat database)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "upgrade", help="create the database if it does not exist, then migrate it to head"
    ).set_defaults(func=cmd_upgrade)
    sub.add_parser(
        "current", help="show the database's revision and whether it is at head"
    ).set_defaults(func=cmd_current)
    _add_tool_commands(sub)
    return parser


def _add_tool_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The DBA and newcomer tools; each module has add_arguments(parser) and run(args)."""
    from skillmeat.tools import bench_queries, bench_sync, demo, explain

    explain_parser = sub.add_parser(
        "explain", help="run each named query path as the app role and show its plan"
    )
    explain.add_arguments(explain_parser)
    explain_parser.set_defaults(func=explain.run)

    bench = sub.add_parser("bench", help="measure the query paths or the catalog sync")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    queries_parser = bench_sub.add_parser(
        "queries", help="median time of each path under RLS vs an explicit filter"
    )
    bench_queries.add_arguments(queries_parser)
    queries_parser.set_defaults(func=bench_queries.run)
    sync_parser = bench_sub.add_parser(
        "sync", help="first sync, identical, 1%% and 10%% rescans against COPY; WAL, rows written"
    )
    bench_sync.add_arguments(sync_parser)
    sync_parser.set_defaults(func=bench_sync.run)

    demo_parser = sub.add_parser(
        "demo", help="two projects, two real catalogs, and what each user can see"
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(func=demo.run)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except CommandError as exc:
        print(f"skillmeat-db {args.command}: {exc}", file=sys.stderr)
        return 1
    except OperationalError as exc:
        print(
            f"skillmeat-db {args.command}: cannot use {_shown(_url(args))}: {_one_line(exc)}",
            file=sys.stderr,
        )
        return 1
    except DBAPIError as exc:
        print(f"skillmeat-db {args.command}: database error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except (ArgumentError, NoSuchModuleError, ModuleNotFoundError) as exc:
        print(f"skillmeat-db {args.command}: bad database URL: {_one_line(exc)}", file=sys.stderr)
        return 1
    except (AlembicCommandError, SkillmeatError) as exc:
        print(f"skillmeat-db {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
