"""README link harvesting on real READMEs' links (tests/data/readme_links, copied from
real repositories): parsing, dedup, limit, depth 1, cycles, replacement, RLS."""

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from skillmeat.core.database import tenant_scope
from skillmeat.core.errors import ConstraintViolation, ScopeError
from skillmeat.core.repositories import marketplace as repo
from skillmeat.core.repositories.links import plan_harvest, repository_of
from skillmeat.core.schemas.marketplace import SourceCreate, SourceUpdate
from tests.rls_world import World, build_world

DATA = Path(__file__).parent / "data" / "readme_links"
READMES = {p.stem: json.loads(p.read_text()) for p in sorted(DATA.glob("*.json"))}

# Computed here, apart from the code under test: a github.com URL whose first two path
# segments are an owner (not one of GitHub's own pages) and a repository.
_REPO = re.compile(r"https?://(?:www\.)?github\.com/([A-Za-z0-9-]+)/([A-Za-z0-9._-]+)", re.I)
_NOT_OWNERS = {"user-attachments", "topics", "sponsors", "orgs", "apps", "marketplace"}


def expected_repositories(urls: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for url in urls:
        match = _REPO.match(url)
        if not match or match.group(1).lower() in _NOT_OWNERS:
            continue
        name = match.group(2).removesuffix(".git")
        canonical = f"https://github.com/{match.group(1)}/{name}"
        seen.setdefault(canonical.lower(), canonical)
    return list(seen.values())


@pytest.mark.parametrize("readme", sorted(READMES))
def test_plan_names_the_repositories_a_real_readme_links(readme: str) -> None:
    urls = READMES[readme]["urls"]
    plan = plan_harvest(urls)
    assert plan.repositories == expected_repositories(urls)
    named = sum(1 for u in urls if repository_of(u) is not None)
    assert plan.skipped == len(urls) - named and plan.skipped > 0


@pytest.mark.parametrize(
    ("url", "repository"),
    [
        ("git@github.com:Acme/Skills.git", "https://github.com/Acme/Skills"),
        ("ssh://git@github.com/acme/skills.git", "https://github.com/acme/skills"),
        ("github.com/acme/skills/", "https://github.com/acme/skills"),
        ("http://www.github.com/acme/skills", "https://github.com/acme/skills"),
        ("https://github.com/acme/skills/tree/main/skills/pdf", "https://github.com/acme/skills"),
        (
            "https://github.com/acme/skills/blob/main/README.md#usage",
            "https://github.com/acme/skills",
        ),
        ("https://github.com/acme/skills/issues/12", "https://github.com/acme/skills"),
        ("https://github.com/acme/skills#readme", "https://github.com/acme/skills"),
        ("https://github.com/acme/skills?tab=readme", "https://github.com/acme/skills"),
        ("https://github.com/acme", None),
        ("https://github.com/topics/claude-code", None),
        ("https://github.com/sponsors/acme", None),
        ("https://gist.github.com/acme/0123abcd", None),
        ("https://gitlab.com/acme/skills", None),
        ("https://github.com/user-attachments/assets/e91255af", None),
        ("https://github.com:8443/acme/skills", None),
        ("not a url", None),
    ],
)
def test_repository_of(url: str, repository: str | None) -> None:
    assert repository_of(url) == repository


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session.connection())


def harvesting(session: Session, world: World, limit: int = 5) -> uuid.UUID:
    with tenant_scope(session, user_id=world.a.members["editor"]):
        source = repo.create_source(
            session,
            SourceCreate(
                project_id=world.a.project,
                repo_url="https://github.com/anthropics/skills",
                harvest_links=True,
                harvest_limit=limit,
            ),
        )
    assert source.harvest_links and source.harvest_limit == limit
    return source.id


def harvest(session: Session, source_id: uuid.UUID, urls: list[str]) -> list[Any]:
    with tenant_scope(session, worker=True):
        return repo.record_harvested_links(session, source_id, urls)


def project_repos(session: Session, project: uuid.UUID) -> dict[str, Any]:
    rows = session.execute(
        text("SELECT * FROM marketplace_sources WHERE project_id = :p"), {"p": project}
    )
    return {row.repo_url.lower(): row for row in rows}


def test_harvest_keeps_the_first_limit_in_order_and_links_existing_sources(
    session: Session, world: World
) -> None:
    finder = harvesting(session, world, limit=5)
    urls = READMES["ComposioHQ__awesome-claude-skills"]["urls"]
    wanted = [
        r
        for r in expected_repositories(urls)
        if r.lower() != "https://github.com/anthropics/skills"
    ]
    # One of them is already a source of the project (in another case).
    with tenant_scope(session, user_id=world.a.members["editor"]):
        existing = repo.create_source(
            session,
            SourceCreate(
                project_id=world.a.project,
                repo_url=wanted[1].upper().replace("HTTPS://GITHUB.COM", "https://github.com"),
            ),
        )
    linked = harvest(session, finder, [*urls, "https://github.com/anthropics/skills/tree/main/x"])
    assert [s.repo_url.lower() for s in linked] == [r.lower() for r in wanted[:5]]
    assert linked[1].id == existing.id and linked[1].discovered_at is None
    for source in (linked[0], *linked[2:]):
        assert source.discovered_at is not None and source.discovered_by == finder
        assert source.harvest_links is False and source.project_id == world.a.project
    with tenant_scope(session, user_id=world.a.members["viewer"]):
        assert [s.id for s in repo.list_linked_sources(session, finder)] == [s.id for s in linked]
    with tenant_scope(session, user_id=world.b.members["owner"]):
        assert session.execute(text("SELECT count(*) FROM marketplace_source_links")).scalar() == 0


def test_a_new_report_replaces_the_links_and_keeps_discovered_sources(
    session: Session, world: World
) -> None:
    finder = harvesting(session, world, limit=20)
    first = harvest(session, finder, READMES["travisvn__awesome-claude-skills"]["urls"])
    second = harvest(session, finder, READMES["VoltAgent__awesome-claude-code-subagents"]["urls"])
    with tenant_scope(session, user_id=world.a.members["viewer"]):
        listed = repo.list_linked_sources(session, finder)
    assert [s.id for s in listed] == [s.id for s in second]
    dropped = {s.id for s in first} - {s.id for s in second}
    assert dropped
    still = {row.id for row in project_repos(session, world.a.project).values()}
    assert dropped <= still  # discovered sources are not deleted


def test_harvest_off_discovered_and_cycles_write_nothing_more(
    session: Session, world: World
) -> None:
    with tenant_scope(session, user_id=world.a.members["editor"]):
        off = repo.create_source(
            session,
            SourceCreate(project_id=world.a.project, repo_url="https://github.com/off/readme"),
        )
    assert off.harvest_links is False and off.harvest_limit == 5
    before = len(project_repos(session, world.a.project))
    assert harvest(session, off.id, ["https://github.com/x/y"]) == []
    assert len(project_repos(session, world.a.project)) == before

    a = harvesting(session, world, limit=5)
    [b] = harvest(session, a, ["https://github.com/b-org/b-repo"])
    # b is discovered: it never harvests (depth 1), even linking back to a.
    assert (
        harvest(session, b.id, ["https://github.com/anthropics/skills", "https://github.com/c/c"])
        == []
    )
    with (
        pytest.raises(ConstraintViolation, match="discovered_never_harvests"),
        tenant_scope(session, user_id=world.a.members["editor"]),
    ):
        repo.update_source(session, b.id, SourceUpdate(harvest_links=True))
    # A non-discovered B harvesting A back: links, creates nothing, never recurses.
    with tenant_scope(session, user_id=world.a.members["editor"]):
        c = repo.create_source(
            session,
            SourceCreate(
                project_id=world.a.project, repo_url="https://github.com/c/c", harvest_links=True
            ),
        )
    harvest(session, a, ["https://github.com/c/c"])
    count = len(project_repos(session, world.a.project))
    back = harvest(session, c.id, ["https://github.com/anthropics/skills/issues"])
    assert [s.id for s in back] == [a] and len(project_repos(session, world.a.project)) == count


def test_harvest_is_for_workers_and_limits_are_checked(session: Session, world: World) -> None:
    finder = harvesting(session, world)
    with pytest.raises(ScopeError), tenant_scope(session, user_id=world.a.members["owner"]):
        repo.record_harvested_links(session, finder, [])
    with pytest.raises(ValueError, match="harvest_limit"):
        SourceCreate(
            project_id=world.a.project, repo_url="https://github.com/a/b", harvest_limit=21
        )
    with pytest.raises(ValueError, match="harvest_links"):
        SourceUpdate.model_validate({"harvest_links": "yes"})
