"""README link harvesting: the repositories a source's README links to (depth 1).

`record_harvested_links` (worker) takes what a scan found in the README, keeps the
strings that name a GitHub repository, and links the source to the project's source
of each (creating a discovered one when the project has none). The database side is
one SECURITY DEFINER helper, skillmeat_private.record_harvested_links: the worker
may neither create sources nor read their projects, and the helper does both only
within the finder's project. Discovered sources never harvest (a CHECK), so a cycle
A -> B -> A creates nothing and nothing recurses; they are scanned like any other
never-synced source (schedule_due_scans queues them first).
"""

import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from skillmeat.core.database.errors import translated_errors
from skillmeat.core.database.tenant import current_scope
from skillmeat.core.errors import NotFound, ScopeError, ValidationFailed
from skillmeat.core.models import MarketplaceSource, MarketplaceSourceLink
from skillmeat.core.repositories import query_paths as paths
from skillmeat.core.repositories.common import check_id
from skillmeat.core.schemas.marketplace import SourceRead, normalize_repo_url

log = logging.getLogger("skillmeat.links")

Source = MarketplaceSource
Link = MarketplaceSourceLink
MAX_URLS = 10_000

# github.com/<first segment>/... that is a GitHub page, not an owner.
RESERVED_OWNERS = frozenset(
    {
        "about", "apps", "collections", "contact", "customer-stories", "enterprise",
        "events", "explore", "features", "issues", "login", "logout", "marketplace",
        "new", "notifications", "orgs", "organizations", "pricing", "pulls", "readme",
        "search", "security", "settings", "site", "sponsors", "team", "topics",
        "trending", "user-attachments", "users", "codespaces", "join", "signup",
    }
)  # fmt: skip
_GITHUB_HOSTS = frozenset({"github.com", "www.github.com"})
_SCP = re.compile(r"git@github\.com:(.+)", re.IGNORECASE)


def repository_of(value: str) -> str | None:
    """The canonical https://github.com/<owner>/<repo> a link names, or None.

    Every form SourceCreate accepts, and URLs inside a repository (/tree/..., /blob/...,
    /issues/..., with a query or an anchor); user and organisation pages, GitHub's own
    pages (topics, sponsors, ...), gists and other hosts name none.
    """
    if not isinstance(value, str):
        return None
    raw = value.strip()
    try:
        canonical = normalize_repo_url(raw)  # the forms SourceCreate accepts
    except ValidationFailed:
        pass
    else:
        owner = canonical.split("/")[3]
        return None if owner.lower() in RESERVED_OWNERS else canonical
    scp = _SCP.fullmatch(raw)
    if scp:
        path = scp.group(1)
    else:
        with_scheme = raw if "://" in raw else f"https://{raw}"
        try:
            parts = urlsplit(with_scheme)
        except ValueError:
            return None
        if parts.scheme.lower() not in ("http", "https", "ssh", "git") or parts.port is not None:
            return None
        if (parts.hostname or "").lower() not in _GITHUB_HOSTS or parts.username not in (
            None,
            "git",
        ):
            return None
        path = parts.path
    segments = [s for s in path.split("/") if s]
    if len(segments) < 2 or segments[0].lower() in RESERVED_OWNERS:
        return None
    try:
        return normalize_repo_url(f"https://github.com/{segments[0]}/{segments[1]}")
    except ValidationFailed:
        return None


@dataclass(frozen=True)
class HarvestPlan:
    """What a README's links name: repositories in order of first appearance (compared
    case-insensitively) and how many links named none."""

    repositories: list[str] = field(default_factory=list)
    skipped: int = 0


def plan_harvest(repo_urls: Iterable[str]) -> HarvestPlan:
    """The repositories `repo_urls` name, deduplicated (case-insensitively, first spelling
    kept), and the count of strings that name none."""
    if isinstance(repo_urls, str | bytes):
        raise ValidationFailed("repo_urls", repo_urls, "must be an iterable of URL strings")
    seen: set[str] = set()
    repositories: list[str] = []
    skipped = 0
    for count, url in enumerate(repo_urls, start=1):
        if count > MAX_URLS:
            raise ValidationFailed(
                "repo_urls", f"more than {MAX_URLS}", f"at most {MAX_URLS} links per call"
            )
        repository = repository_of(url)
        if repository is None:
            skipped += 1
        elif repository.lower() not in seen:
            seen.add(repository.lower())
            repositories.append(repository)
    return HarvestPlan(repositories=repositories, skipped=skipped)


def record_harvested_links(
    session: Session, source_id: uuid.UUID, repo_urls: Iterable[str]
) -> list[SourceRead]:
    """Replace the source's links with the repositories its README names (worker or
    admin): the source itself and duplicates dropped, the first `harvest_limit` kept in
    order, each linked to the project's source of that repository or to a new
    discovered one. A source with harvest_links false, or a discovered source (depth 1),
    gets nothing written and []."""
    scope = current_scope(session)
    if not (scope.worker or scope.admin):
        raise ScopeError(
            "record_harvested_links is for scan workers: use tenant_scope(session, worker=True)"
        )
    check_id("source_id", source_id)
    plan = plan_harvest(repo_urls)
    with translated_errors():
        rows = session.execute(
            text(
                "SELECT link_position, source FROM "
                "skillmeat_private.record_harvested_links(:source_id, :urls) "
                "ORDER BY link_position"
            ),
            {"source_id": source_id, "urls": plan.repositories},
        ).all()
    linked = [SourceRead.model_validate(row.source) for row in rows]
    if not linked and plan.repositories:
        log.info(
            "harvest: source %s does not harvest (harvest_links off, or discovered: depth 1); "
            "nothing written",
            source_id,
        )
    log.info(
        "harvest: source %s: %d repositories named, %d links skipped (no repository), %d linked",
        source_id,
        len(plan.repositories),
        plan.skipped,
        len(linked),
    )
    return linked


def list_linked_sources(session: Session, source_id: uuid.UUID) -> list[SourceRead]:
    """The sources the source's README links to, in README order (viewer)."""
    current_scope(session)
    check_id("source_id", source_id)
    with translated_errors():
        if session.execute(select(Source.id).where(Source.id == source_id)).first() is None:
            raise NotFound(f"source_id: {source_id} is not a source visible to this user")
        rows = session.execute(
            paths.with_latest_scan()
            .join(Link, Link.linked_source_id == Source.id)
            .where(Link.source_id == source_id)
            .order_by(Link.position)
        ).all()
    from skillmeat.core.repositories.marketplace import _source_read, with_has_token

    return with_has_token(session, [_source_read(row) for row in rows])
