"""A member's request that runs arbitrary SQL (an injection) inside its own tenant_scope
and commits: the requests that come after it on the same connection must behave
exactly as if it had never run (docs/security.md, 'Isolation across requests').

Every vector runs on three routes:
- `pool`: the library's own pool (pool_size=1, so the victim gets the attacker's very
  connection), member-pool login role; admin requests through the admin pool's login.
- `pgbouncer`: PgBouncer in transaction mode with one server connection per login
  role; attacker and victim are separate clients of the member login, so they share
  that server connection. Admin requests use the admin login (its own server connection).
- `pgbouncer-shared`: the old single-login wiring (one login role member of both
  request roles) through that PgBouncer, so the attacker, the member victim and the
  admin share one server connection: the only way an admin request can meet what a
  member request left behind.

Each test compares the victims' requests with a baseline taken before the attack,
checks side effects as the superuser, and on `pool` checks that the next checkout is
clean (DISCARD ALL).
"""

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from skillmeat.core.database import (
    identity_settings,
    make_engine,
    make_session_factory,
    tenant_scope,
)
from skillmeat.core.database.identity import (
    PROOF_SETTING,
    USER_SETTING,
    IdentityKey,
    configured_key,
)
from skillmeat.core.errors import PermissionDenied
from skillmeat.core.models import ArtifactType
from skillmeat.core.repositories import marketplace as repo
from skillmeat.core.repositories.search import search_entries
from skillmeat.core.schemas.marketplace import DetectedArtifact
from tests.login_roles import ADMIN_POOL, MEMBER_POOL, login_role
from tests.pgbouncer import start_pgbouncer
from tests.rls_world import Tenant, World

ROUTES = ("pool", "pgbouncer", "pgbouncer-shared")
SCAN = [
    DetectedArtifact(
        artifact_type=ArtifactType.SKILL,
        detected_path=f"skills/victim-{n}",
        upstream_url=f"https://github.com/victim/r/tree/v1/skills/{n}",
        detected_version_sha="v1",
        confidence_score=90,
    )
    for n in range(3)
]
LOCK_KEY = 734_211


@dataclass
class Logins:
    member: URL
    admin: URL
    both: URL  # the old documented wiring: NOINHERIT member of both request roles


@dataclass
class Route:
    name: str
    attacker: sessionmaker[Session]
    victim: sessionmaker[Session]
    admin: sessionmaker[Session]
    own_pool: Engine | None  # the pool route's member engine, to inspect its next checkout
    admin_shares_connection: bool


@pytest.fixture(scope="module")
def logins(engine: Engine, database_url: URL) -> Iterator[Logins]:
    with (
        login_role(engine, database_url, MEMBER_POOL) as member,
        login_role(engine, database_url, ADMIN_POOL) as admin,
        login_role(engine, database_url, MEMBER_POOL + ADMIN_POOL) as both,
    ):
        yield Logins(member=member, admin=admin, both=both)


@pytest.fixture(params=ROUTES)
def route(request: pytest.FixtureRequest, logins: Logins, database_url: URL) -> Iterator[Route]:
    """A fresh route per test (a fresh PgBouncer too): a baseline is never taken on a
    server connection an earlier test attacked."""
    name: str = request.param
    engines: list[Engine] = []
    with ExitStack() as stack:
        if name == "pool":
            member = make_engine(logins.member, pool_size=1, max_overflow=0)
            admin = make_engine(logins.admin, pool_size=1, max_overflow=0)
            engines += [member, admin]
            made = Route(
                name,
                attacker=make_session_factory(member),
                victim=make_session_factory(member),
                admin=make_session_factory(admin),
                own_pool=member,
                admin_shares_connection=False,
            )
        else:
            shared = name == "pgbouncer-shared"
            users = [logins.both] if shared else [logins.member, logins.admin]
            bouncer = stack.enter_context(start_pgbouncer(database_url, users, pool_size=1))
            member_login = logins.both if shared else logins.member
            admin_login = logins.both if shared else logins.admin
            engines += [
                bouncer.engine(member_login),
                bouncer.engine(member_login),
                bouncer.engine(admin_login),
            ]
            made = Route(
                name,
                attacker=make_session_factory(engines[0]),
                victim=make_session_factory(engines[1]),
                admin=make_session_factory(engines[2]),
                own_pool=None,
                admin_shares_connection=shared,
            )
        try:
            yield made
        finally:
            for e in engines:
                e.dispose()


# --- what the victims see ----------------------------------------------------------


@dataclass
class Seen:
    """One request's observable behaviour (volatile columns such as timestamps left out)."""

    pid: int
    rows: dict[str, Any] = field(default_factory=dict)


def _settings(s: Session) -> dict[str, str]:
    """Every setting as the request's transaction sees it."""
    rows = s.execute(text("SELECT name, setting FROM pg_catalog.pg_settings"))
    return {r[0]: r[1] for r in rows}


def member_request(route: Route, tenant: Tenant, user: uuid.UUID) -> Seen:
    """A member's ordinary work: reads of all four tables, the library's listings, a
    rename, a rescan and an import, in two requests on one checkout."""
    with route.victim() as s:
        with tenant_scope(s, user_id=user):
            seen = Seen(pid=s.execute(text("SELECT pg_backend_pid()")).scalar_one())
            r = seen.rows
            r["who"] = s.execute(text("SELECT current_user, current_setting('search_path')")).one()
            r["projects"] = s.execute(text("SELECT id, name FROM projects ORDER BY id")).all()
            r["members"] = s.execute(
                text("SELECT project_id, user_id, role FROM project_members ORDER BY user_id")
            ).all()
            r["sources"] = [(x.id, x.repo_url) for x in repo.list_sources(s, limit=100).items]
            r["entries"] = [
                (e.id, e.detected_path, e.status, e.detected_version_sha)
                for e in repo.list_entries(s, tenant.source, limit=100).items
            ]
            r["counts"] = repo.catalog_counts(s)
            # search (the definer functions): full text, type-ahead prefix, typo fallback
            r["search"] = [
                [(h.entry.id, h.score) for h in search_entries(s, query, limit=50).items]
                for query in ("victim", "vict", "victin", "vcitim")
            ]
            r["renamed"] = (
                s.execute(
                    text("UPDATE projects SET name = name WHERE id = :p RETURNING id"),
                    {"p": tenant.project},
                )
                .scalars()
                .all()
            )
            r["settings"] = _settings(s)
        with tenant_scope(s, user_id=user):
            result = repo.sync_catalog(s, tenant.source, SCAN)
            r["synced"] = (result.new, result.updated, result.removed, result.unchanged)
            r["written"] = (result.inserted, result.changed)
            ids = [e[0] for e in r["entries"]]
            r["marked"] = sorted(repo.mark_imported(s, ids))
    return seen


def admin_request(route: Route, world: World) -> Seen:
    projects = [world.a.project, world.b.project]
    with route.admin() as s, tenant_scope(s, admin=True):
        seen = Seen(pid=s.execute(text("SELECT pg_backend_pid()")).scalar_one())
        r = seen.rows
        r["who"] = s.execute(text("SELECT current_user, current_setting('search_path')")).one()
        p = {"p": projects}
        r["projects"] = s.execute(
            text("SELECT id, name FROM projects WHERE id = ANY(:p) ORDER BY id"), p
        ).all()
        r["members"] = s.execute(
            text(
                "SELECT project_id, user_id, role FROM project_members "
                "WHERE project_id = ANY(:p) ORDER BY user_id"
            ),
            p,
        ).all()
        r["sources"] = s.execute(
            text(
                "SELECT id, repo_url FROM marketplace_sources "
                "WHERE project_id = ANY(:p) ORDER BY id"
            ),
            p,
        ).all()
        r["entries"] = s.execute(
            text(
                "SELECT e.id, e.detected_path FROM marketplace_catalog_entries e "
                "JOIN marketplace_sources src ON src.id = e.source_id "
                "WHERE src.project_id = ANY(:p) ORDER BY e.id"
            ),
            p,
        ).all()
        r["settings"] = _settings(s)
    return seen


def durable_state(engine: Engine, world: World) -> dict[str, Any]:
    """The world as the superuser sees it: memberships, names, sources, entries."""
    p = {"p": [world.a.project, world.b.project]}
    with engine.connect() as conn:
        return {
            "members": set(
                conn.execute(
                    text(
                        "SELECT project_id, user_id, role FROM project_members "
                        "WHERE project_id = ANY(:p)"
                    ),
                    p,
                ).all()
            ),
            "names": set(
                conn.execute(text("SELECT id, name FROM projects WHERE id = ANY(:p)"), p).all()
            ),
            "sources": set(
                conn.execute(
                    text(
                        "SELECT id, repo_url, branch_or_ref FROM marketplace_sources "
                        "WHERE project_id = ANY(:p)"
                    ),
                    p,
                ).all()
            ),
            "entries": set(
                conn.execute(
                    text(
                        "SELECT e.id, e.detected_path, e.status FROM marketplace_catalog_entries e "
                        "JOIN marketplace_sources s ON s.id = e.source_id "
                        "WHERE s.project_id = ANY(:p)"
                    ),
                    p,
                ).all()
            ),
        }


@dataclass
class Scenario:
    route: Route
    world: World
    superuser: Engine
    attacker: uuid.UUID
    victim: uuid.UUID
    baseline: Seen
    admin_baseline: Seen
    durable: dict[str, Any]

    def attack(self, sql: list[str] | Callable[[Session], None]) -> int:
        """Run the injection inside the attacker's own scope and commit; its backend pid."""
        with self.route.attacker() as s, tenant_scope(s, user_id=self.attacker):
            pid: int = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
            if callable(sql):
                sql(s)
            else:
                for statement in sql:
                    s.execute(text(statement))
        return pid

    def attacker_loot(self) -> int | None:
        """What the attacker's next request finds in its side table (None: no table)."""
        with self.route.attacker() as s, tenant_scope(s, user_id=self.attacker):
            found = s.execute(text("SELECT pg_catalog.to_regclass('pg_temp.loot')")).scalar()
            if found is None:
                return None
            n: int = s.execute(text("SELECT count(*) FROM pg_temp.loot")).scalar_one()
            return n

    def assert_unaffected(self, attack_pid: int) -> None:
        """The victims' later requests behave exactly as the baseline; nothing durable changed."""
        after = member_request(self.route, self.world.b, self.victim)
        assert after.pid == attack_pid, "the victim must get the attacked connection"
        assert after.rows["settings"] == self.baseline.rows["settings"]
        assert after.rows == self.baseline.rows
        admin_after = admin_request(self.route, self.world)
        if self.route.admin_shares_connection:
            assert admin_after.pid == attack_pid
        assert admin_after.rows["settings"] == self.admin_baseline.rows["settings"]
        assert admin_after.rows == self.admin_baseline.rows
        assert durable_state(self.superuser, self.world) == self.durable
        owners = {(p, u) for p, u, role in self.durable["members"] if role == "owner"}
        assert (self.world.b.project, self.attacker) not in owners


@pytest.fixture
def scenario(route: Route, committed_world: World, engine: Engine) -> Scenario:
    world = committed_world
    victim = world.b.members["owner"]
    for _ in range(2):  # first rescan, then its import: the steady state
        member_request(route, world.b, victim)
    baseline = member_request(route, world.b, victim)
    admin_baseline = admin_request(route, world)
    return Scenario(
        route=route,
        world=world,
        superuser=engine,
        attacker=world.a.members["owner"],
        victim=victim,
        baseline=baseline,
        admin_baseline=admin_baseline,
        durable=durable_state(engine, world),
    )


def assert_clean_checkout(engine: Engine, attack_pid: int) -> None:
    """Our own pool's next checkout of the attacked connection carries nothing over."""
    with engine.connect() as conn:
        state = conn.execute(
            text(
                "SELECT pg_backend_pid() AS pid, current_setting('role') AS role, "
                "(SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) "
                "  AS temp_relations, "
                "(SELECT count(*) FROM pg_proc WHERE pronamespace = pg_my_temp_schema()) "
                "  AS temp_functions, "
                "(SELECT count(*) FROM pg_prepared_statements) AS prepared, "
                "(SELECT count(*) FROM pg_cursors) AS cursors, "
                "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "   AND pid = pg_backend_pid()) AS advisory_locks, "
                "(SELECT count(*) FROM pg_listening_channels()) AS listening, "
                "(SELECT array_agg(name ORDER BY name) FROM pg_settings "
                "   WHERE source = 'session' AND name NOT LIKE 'transaction\\_%') "
                "  AS session_settings"
            )
        ).one()
    assert state.pid == attack_pid, "the pool of one must hand out the attacked connection"
    assert state._asdict() == {
        "pid": attack_pid,
        "role": "none",
        "temp_relations": 0,
        "temp_functions": 0,
        "prepared": 0,
        "cursors": 0,
        "advisory_locks": 0,
        "listening": 0,
        "session_settings": None,
    }


# --- vector 1: temporary views that shadow the tables -------------------------------

SHADOWS = {
    "projects": "p.id",
    "project_members": "p.project_id",
    "marketplace_sources": "p.project_id",
    "marketplace_catalog_entries": (
        "(SELECT s.project_id FROM public.marketplace_sources s WHERE s.id = p.source_id)"
    ),
}


def shadow_views(attacker: uuid.UUID) -> list[str]:
    steal = f"""
CREATE FUNCTION pg_temp.steal(tbl text, r text, project uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.loot VALUES (tbl, r);
    BEGIN
        INSERT INTO public.project_members (project_id, user_id, role)
        VALUES (project, '{attacker}', 'owner');
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN true;
END $$"""
    return [
        "SET SESSION search_path = pg_temp, public, pg_catalog",
        "CREATE TEMP TABLE loot (tbl text, r text)",
        steal,
        *(
            f"CREATE TEMP VIEW {table} AS SELECT * FROM public.{table} p "
            f"WHERE pg_temp.steal('{table}', p::text, {project})"
            for table, project in SHADOWS.items()
        ),
    ]


def test_temp_views_shadowing_the_tables_are_never_used(scenario: Scenario) -> None:
    pid = scenario.attack(shadow_views(scenario.attacker))
    scenario.assert_unaffected(pid)
    loot = scenario.attacker_loot()
    if scenario.route.own_pool is not None:
        assert loot is None  # DISCARD ALL dropped the table, the function and the views
        assert_clean_checkout(scenario.route.own_pool, pid)
    else:
        assert loot == 0


def test_the_shadowing_views_work_where_the_search_path_is_not_pinned(scenario: Scenario) -> None:
    """The vector is real: on the attacked connection, a transaction that does not pin
    the search path (the attacker's own next one) reads through the views."""
    if scenario.route.own_pool is not None:
        pytest.skip("on our own pool DISCARD ALL drops the views before any later request")
    pid = scenario.attack(shadow_views(scenario.attacker))
    with scenario.route.attacker() as s, tenant_scope(s, user_id=scenario.attacker):
        assert s.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid
        s.execute(text("SELECT set_config('search_path', 'pg_temp, public, pg_catalog', true)"))
        s.execute(text("SELECT count(*) FROM projects")).scalar_one()
        stolen = s.execute(text("SELECT count(*) FROM pg_temp.loot")).scalar_one()
    assert stolen > 0


# --- vector 2: prepared statements under the driver's names -------------------------


def member_reads(route: Route, tenant: Tenant, user: uuid.UUID) -> list[Any]:
    """Reads only: psycopg forgets its prepared statements after a DROP or a ROLLBACK
    (sync_catalog drops its staging table), so these are what it would prepare."""
    with route.victim() as s, tenant_scope(s, user_id=user):
        return [
            s.execute(text("SELECT id, name FROM projects ORDER BY id")).all(),
            [(x.id, x.repo_url) for x in repo.list_sources(s, limit=100).items],
            [(e.id, e.status) for e in repo.list_entries(s, tenant.source, limit=100).items],
        ]


def test_replaced_prepared_statements_are_never_executed(scenario: Scenario) -> None:
    world, victim = scenario.world, scenario.victim
    # Past psycopg's default prepare_threshold (5), were it in effect.
    before = [member_reads(scenario.route, world.b, victim) for _ in range(6)]
    evil = (
        "INSERT INTO public.project_members (project_id, user_id, role) "
        f"SELECT p.id, '{scenario.attacker}', 'owner' FROM public.projects p "
        "ON CONFLICT DO NOTHING RETURNING project_id"
    )
    pid = scenario.attack(
        ["DEALLOCATE ALL", *(f"PREPARE _pg3_{n} AS {evil}" for n in range(6))]
        + [f"PREPARE _pg3_{n}_x (uuid) AS {evil}" for n in range(2)]
    )
    assert member_reads(scenario.route, world.b, victim) == before[-1]
    scenario.assert_unaffected(pid)
    if scenario.route.own_pool is not None:
        assert_clean_checkout(scenario.route.own_pool, pid)


# --- vector 3: SET SESSION ROLE -----------------------------------------------------


def test_set_session_role_admin_is_refused_on_the_member_pool(scenario: Scenario) -> None:
    if scenario.route.name == "pgbouncer-shared":
        pytest.skip("the old single-login wiring may act as admin: see the next test")
    with pytest.raises(PermissionDenied, match="may not take that role") as refused:
        scenario.attack(["SET SESSION ROLE skillmeat_admin"])
    cause = refused.value.__cause__
    assert isinstance(cause, DBAPIError)
    assert getattr(cause.orig, "sqlstate", None) == "42501"
    pid = scenario.attack(["SET SESSION ROLE skillmeat_app"])  # allowed, and harmless
    scenario.assert_unaffected(pid)
    if scenario.route.own_pool is not None:
        assert_clean_checkout(scenario.route.own_pool, pid)


def test_old_wiring_session_role_admin_does_not_reach_the_next_member_request(
    scenario: Scenario,
) -> None:
    """One login member of both roles (the old docs): the injection may become admin
    for the rest of the session, yet the next member request on that server
    connection still runs as skillmeat_app and sees only its own rows."""
    if scenario.route.name != "pgbouncer-shared":
        pytest.skip("needs the single-login wiring")
    pid = scenario.attack(["SET SESSION ROLE skillmeat_admin"])
    scenario.assert_unaffected(pid)
    assert scenario.baseline.rows["who"][0] == "skillmeat_app"
    assert scenario.baseline.rows["projects"] == [
        (scenario.world.b.project, scenario.baseline.rows["projects"][0][1])
    ]


# --- vector 4: session state left behind --------------------------------------------

SESSION_SETTINGS = {
    "lock_timeout": "1",
    "default_transaction_read_only": "on",
    "default_transaction_isolation": "serializable",
    "enable_indexscan": "off",
    "enable_bitmapscan": "off",
    "enable_seqscan": "off",
    "row_security": "off",
    "work_mem": "64kB",
    "jit_above_cost": "0",
    "enable_nestloop": "off",
    "pg_trgm.similarity_threshold": "0.01",
    "plpgsql.extra_errors": "all",
    "transform_null_equals": "on",
    "bytea_output": "escape",
    "TimeZone": "Pacific/Kiritimati",
    "DateStyle": "SQL, DMY",
    "standard_conforming_strings": "off",
    "search_path": "pg_temp, public, pg_catalog",
}


def leave_session_state(victim: uuid.UUID, forged_proof: str) -> Callable[[Session], None]:
    def run(s: Session) -> None:
        s.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
        s.execute(text("LISTEN attacker_channel"))
        s.execute(text("DECLARE held CURSOR WITH HOLD FOR SELECT id, name FROM public.projects"))
        s.execute(text("SET SESSION ROLE skillmeat_app"))
        values = {
            **SESSION_SETTINGS,
            USER_SETTING: str(victim),
            PROOF_SETTING: forged_proof,
        }
        sets = ", ".join(f"set_config(:n{i}, :v{i}, false)" for i in range(len(values)))
        params: dict[str, object] = {}
        for i, (name, value) in enumerate(values.items()):
            params[f"n{i}"], params[f"v{i}"] = name, value
        s.execute(text(f"SELECT {sets}"), params)

    return run


def test_session_settings_locks_listens_and_cursors_left_behind(scenario: Scenario) -> None:
    # A proof the attacker could have seen: the victim's own, long expired.
    stolen = identity_settings(scenario.victim, ttl=-dt.timedelta(minutes=10))[PROOF_SETTING]
    pid = scenario.attack(leave_session_state(scenario.victim, stolen))
    scenario.assert_unaffected(pid)
    if scenario.route.own_pool is not None:
        assert_clean_checkout(scenario.route.own_pool, pid)
        with scenario.superuser.connect() as conn:
            free = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar()
            conn.execute(text("SELECT pg_advisory_unlock_all()"))
        assert free


def test_a_session_statement_timeout_left_behind(scenario: Scenario) -> None:
    """SET SESSION statement_timeout = 1, amplified by 2000 session placeholders (each
    later scope restores them all, ~10 ms): a denial of service, not a leak."""

    def run(s: Session) -> None:
        s.execute(
            text(
                "SELECT count(set_config('attack.p' || g, 'x', false)) "
                "FROM generate_series(1, 2000) g"
            )
        )
        s.execute(text("SELECT set_config('statement_timeout', '1', false)"))

    pid = scenario.attack(run)
    scenario.assert_unaffected(pid)
    if scenario.route.own_pool is not None:
        assert_clean_checkout(scenario.route.own_pool, pid)


def test_application_name_left_behind(scenario: Scenario) -> None:
    """A spoofed application_name misleads monitoring and logs of later requests."""
    pid = scenario.attack(["SET SESSION application_name = 'attacker'"])
    scenario.assert_unaffected(pid)
    if scenario.route.own_pool is not None:
        assert_clean_checkout(scenario.route.own_pool, pid)


# --- vector 5: forged identities inside the attacker's own scope ---------------------


def _forged_proofs(victim: uuid.UUID, attacker_proof: str) -> dict[str, str | None]:
    key = configured_key()
    assert key is not None
    other = IdentityKey.generate()
    same_id_other_secret = IdentityKey(key_id=key.key_id, secret=other.secret)
    version, key_id, expires, mac = attacker_proof.split(".")
    flipped = ("0" if mac[0] != "0" else "1") + mac[1:]
    return {
        "no-proof": "",
        "attackers-own-proof": None,  # keep the scope's proof (made for the attacker)
        "tampered": f"{version}.{key_id}.{expires}.{flipped}",
        "expired": identity_settings(victim, key=key, ttl=-dt.timedelta(seconds=5))[PROOF_SETTING],
        "other-key": identity_settings(victim, key=other)[PROOF_SETTING],
        "known-key-id-wrong-secret": identity_settings(victim, key=same_id_other_secret)[
            PROOF_SETTING
        ],
        "later-expiry": f"{version}.{key_id}.{int(expires) + 3600}.{mac}",
    }


FORGERIES = (
    "no-proof",
    "attackers-own-proof",
    "tampered",
    "expired",
    "other-key",
    "known-key-id-wrong-secret",
    "later-expiry",
)


@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_identity_reads_and_writes_nothing(scenario: Scenario, forgery: str) -> None:
    world, victim = scenario.world, scenario.victim

    def claim_victim(s: Session) -> None:
        own = s.execute(text("SELECT current_setting('skillmeat.user_proof')")).scalar_one()
        proof = _forged_proofs(victim, own)[forgery]
        s.execute(text("SELECT set_config('skillmeat.user_id', :u, true)"), {"u": str(victim)})
        if proof is not None:
            s.execute(text("SELECT set_config('skillmeat.user_proof', :p, true)"), {"p": proof})

    seen: dict[str, object] = {}

    def read(s: Session) -> None:
        claim_victim(s)
        b = {"p": world.b.project, "s": world.b.source}
        seen["projects"] = s.execute(text("SELECT count(*) FROM projects")).scalar_one()
        seen["members"] = s.execute(text("SELECT count(*) FROM project_members")).scalar_one()
        seen["sources"] = s.execute(text("SELECT count(*) FROM marketplace_sources")).scalar_one()
        seen["entries"] = s.execute(
            text("SELECT count(*) FROM marketplace_catalog_entries WHERE source_id = :s"), b
        ).scalar_one()
        seen["renamed"] = s.execute(
            text("UPDATE projects SET name = 'pwned' WHERE id = :p"), b
        ).rowcount  # type: ignore[attr-defined]
        seen["moved"] = s.execute(
            text("UPDATE marketplace_sources SET branch_or_ref = 'pwned' WHERE id = :s"), b
        ).rowcount  # type: ignore[attr-defined]
        seen["whoami"] = s.execute(text("SELECT skillmeat_private.current_user_id()")).scalar()

    pid = scenario.attack(read)
    assert seen == {
        "projects": 0,
        "members": 0,
        "sources": 0,
        "entries": 0,
        "renamed": 0,
        "moved": 0,
        "whoami": None,
    }

    def join_victims_project(s: Session) -> None:
        claim_victim(s)
        s.execute(
            text(
                "INSERT INTO project_members (project_id, user_id, role) VALUES (:p, :u, 'owner')"
            ),
            {"p": world.b.project, "u": str(scenario.attacker)},
        )

    with pytest.raises(PermissionDenied, match=r"a project.s members"):
        scenario.attack(join_victims_project)
    scenario.assert_unaffected(pid)
