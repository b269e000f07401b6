"""Catalog search: web-search syntax over names, tags and descriptions, under RLS.

The query runs in `skillmeat_private.search_catalog` (members) or
`search_catalog_admin` (admin): SECURITY DEFINER functions owned by skillmeat_search,
which take the tenant filter from the verified identity themselves, so that the text
predicate and the tenant filter are one GIN index condition (under a policy, `@@` is
not LEAKPROOF and could only be a filter: 5.5x slower, docs/performance.md). They
return (id, score) of one page, joined in the same statement to the entries under the
caller's own RLS.
"""

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from skillmeat.core.database.errors import translated_errors
from skillmeat.core.database.tenant import current_scope
from skillmeat.core.errors import ValidationFailed
from skillmeat.core.models import ArtifactType, CatalogStatus
from skillmeat.core.repositories import query_paths as paths
from skillmeat.core.repositories.common import Page, check_id, check_limit, enum_value
from skillmeat.core.schemas.marketplace import CatalogEntryRead, SearchHit

MAX_QUERY_CHARS = 200
CURSOR_KIND = "search"
# Word parts: letters and digits (PostgreSQL's parser splits 'code-reviewer' and
# 'python_pro' into parts too; the hyphenated whole is matched as the phrase of them).
_PART = re.compile(r"[^\W_]+")
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')

# The one statement each entry point runs (also used by the EXPLAIN tests and the bench):
# the definer's page of (id, score), joined to the entries under the caller's own RLS
# (a second check, not a filter: the definer already applied the tenant filter).
_ARGS = (
    "CAST(:query AS tsquery), CAST(:plain AS tsquery), :exact, :prefix, :pattern, :fuzzy, "
    "CAST(:project AS uuid), CAST(:sources AS uuid[]), CAST(:types AS text[]), "
    "CAST(:statuses AS text[]), :include_excluded, CAST(:after_score AS double precision), "
    "CAST(:after_id AS uuid), :limit"
)
_COLUMNS = ", ".join(f"e.{name}" for name in CatalogEntryRead.model_fields)
_PAGE = (
    "SELECT r.score AS search_score, {columns} FROM skillmeat_private.{function}({args}) r "
    "JOIN public.marketplace_catalog_entries e ON e.id = r.entry_id "
    "ORDER BY r.score DESC, r.entry_id"
)
MEMBER_SEARCH_SQL = _PAGE.format(columns=_COLUMNS, function="search_catalog", args=_ARGS)
ADMIN_SEARCH_SQL = _PAGE.format(columns=_COLUMNS, function="search_catalog_admin", args=_ARGS)
STEMS_SQL = "SELECT w, ts_lexize('english_stem', w) FROM unnest(CAST(:words AS text[])) AS w"


@dataclass(frozen=True)
class Term:
    """A word (its parts) or a quoted phrase; negated: `-word`."""

    parts: tuple[str, ...]
    negated: bool = False
    quoted: bool = False


@dataclass(frozen=True)
class ParsedQuery:
    """AND of groups; each group an OR of terms. exact/prefix: the plain-words form
    compared with names; pattern: ILIKE for one bare word; fuzzy: the typo fallback."""

    groups: tuple[tuple[Term, ...], ...]
    prefix_last: bool
    exact: str | None
    pattern: str | None
    fuzzy: str | None

    def words(self) -> list[str]:
        return sorted({p for group in self.groups for t in group for p in t.parts})


def _refuse(query: object, why: str) -> ValidationFailed:
    shown = repr(query[:40] + "..." if isinstance(query, str) and len(query) > 40 else query)
    return ValidationFailed("query", query, f"{shown} is not allowed ({why})")


def parse_query(query: str) -> ParsedQuery:
    """Web-search syntax: words (all must match), "quoted phrases", `or` between two
    terms, `-word` / `-"phrase"` to exclude. The last bare word also matches as a prefix."""
    if not isinstance(query, str):
        raise _refuse(query, "must be a string")
    if len(query) > MAX_QUERY_CHARS:
        raise _refuse(query, f"has {len(query)} characters; at most {MAX_QUERY_CHARS}")
    if "\x00" in query:
        raise _refuse(query, "contains a NUL character")
    terms: list[Term | None] = []  # None: an `or`
    for match in _TOKEN.finditer(query.lower()):
        negated, phrase, bare = match.group(1), match.group(2), match.group(3)
        if bare is not None:
            if bare == "or":
                terms.append(None)
                continue
            negated, word = ("-", bare[1:]) if bare.startswith("-") else ("", bare)
            parts = tuple(_PART.findall(word))
            quoted = False
        else:
            parts, quoted = tuple(_PART.findall(phrase)), True
        if parts:
            terms.append(Term(parts, negated=bool(negated), quoted=quoted))
    groups: list[list[Term]] = []
    join_next = False
    for term in terms:
        if term is None:
            join_next = bool(groups)
            continue
        if join_next:
            groups[-1].append(term)
        else:
            groups.append([term])
        join_next = False
    if not any(not t.negated for g in groups for t in g):
        raise _refuse(query, "is blank: give at least one word to find, not only -words")
    last = terms[-1] if terms else None
    prefix_last = isinstance(last, Term) and not last.quoted and not last.negated
    plain = all(len(g) == 1 and not g[0].negated and not g[0].quoted for g in groups)
    words = " ".join(" ".join(g[0].parts) for g in groups) if plain else None
    bare = query.strip().lower()
    single = plain and len(groups) == 1 and " " not in bare
    pattern = None
    if single and len(bare) >= 3:
        pattern = bare.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return ParsedQuery(
        groups=tuple(tuple(g) for g in groups),
        prefix_last=prefix_last,
        exact=words,
        pattern=pattern,
        fuzzy=bare if single else None,
    )


def _lexeme(part: str, *, prefix: bool = False) -> str:
    return "'" + part.replace("'", "''") + "'" + (":*" if prefix else "")


def _phrase(lexemes: list[str | None]) -> str | None:
    """Lexemes joined by <->, or by <n> across the stop words (None) English drops."""
    out, gap = "", 1
    for lexeme in lexemes:
        if lexeme is None:
            gap += 1 if out else 0
            continue
        out = lexeme if not out else f"{out} <{gap}> {lexeme}"
        gap = 1
    return out or None


def render_tsquery(
    parsed: ParsedQuery, stems: dict[str, str | None], *, plain: bool = False
) -> str:
    """The tsquery text: each part as its simple (unstemmed) lexeme or its English stem;
    several parts as a phrase, in both forms; the last bare word's last part a prefix.
    plain: the same query with the prefix's `:*` dropped and nothing else changed (its
    matches are a subset of the query's: search looks them up first)."""
    rendered_groups = []
    for gi, group in enumerate(parsed.groups):
        alternatives = []
        for ti, term in enumerate(group):
            is_last = gi == len(parsed.groups) - 1 and ti == len(group) - 1
            prefix = parsed.prefix_last and is_last
            simple = [
                _lexeme(p, prefix=prefix and not plain and i == len(term.parts) - 1)
                for i, p in enumerate(term.parts)
            ]
            english: list[str | None] = []
            for i, p in enumerate(term.parts):
                stem = stems.get(p)
                last_prefix = prefix and i == len(term.parts) - 1
                # a typed prefix also matches the stemmed descriptions by its stem
                # ('kubernetes' is 'kubernet' there)
                english.append(
                    _lexeme(stem or p, prefix=last_prefix and not plain)
                    if stem or last_prefix
                    else None
                )
            forms = [_phrase(list(simple))]
            english_form = _phrase(english)
            if english_form and english_form != forms[0]:
                forms.append(english_form)
            body = " | ".join(f"({f})" for f in forms if f)
            alternatives.append(f"!({body})" if term.negated else f"({body})")
        rendered_groups.append("(" + " | ".join(alternatives) + ")")
    return " & ".join(rendered_groups)


def _stems(session: Session, words: list[str]) -> dict[str, str | None]:
    """English stems from PostgreSQL's own dictionary (None for a stop word)."""
    stems: dict[str, str | None] = {}
    for word, lexemes in session.execute(text(STEMS_SQL), {"words": words}):
        stems[word] = lexemes[0] if lexemes else None
    return stems


def search_entries(
    session: Session,
    query: str,
    *,
    project_id: uuid.UUID | None = None,
    source_ids: Sequence[uuid.UUID] | None = None,
    artifact_types: Iterable[ArtifactType | str] | None = None,
    statuses: Iterable[CatalogStatus | str] | None = None,
    include_excluded: bool = False,
    limit: int = 20,
    cursor: str | None = None,
) -> Page[SearchHit]:
    """Entries matching `query`, best first: exact name, name prefix, then full-text rank
    (name > tags > description), ties by id; a one-word query without a full-text hit
    falls back to names within trigram similarity (typos). Viewer: the user's projects;
    admin: every project. The cursor is keyset over (score, id)."""
    scope = current_scope(session)
    parsed = parse_query(query)
    if project_id is not None:
        check_id("project_id", project_id)
    sources = None
    if source_ids is not None:
        if isinstance(source_ids, (str, bytes)):
            raise ValidationFailed("source_ids", source_ids, "must be a list of uuid.UUID")
        sources = [check_id("source_ids", s) for s in source_ids]
    check_limit(limit)
    types = sorted(
        {enum_value("artifact_types", t, ArtifactType).value for t in artifact_types or ()}
    )
    wanted = sorted({enum_value("statuses", s, CatalogStatus).value for s in statuses or ()})
    after = paths.decode_cursor(cursor, CURSOR_KIND) if cursor else None
    with translated_errors():
        stems = _stems(session, parsed.words())
        params = {
            "query": render_tsquery(parsed, stems),
            # the query without the type-ahead prefix: its words are looked up first
            "plain": render_tsquery(parsed, stems, plain=True) if parsed.prefix_last else None,
            "exact": parsed.exact,
            "prefix": parsed.exact,
            "pattern": parsed.pattern,
            "fuzzy": parsed.fuzzy,
            "project": project_id,
            "sources": sources,
            "types": types or None,
            "statuses": wanted or None,
            "include_excluded": bool(include_excluded),
            "after_score": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit + 1,
        }
        sql = ADMIN_SEARCH_SQL if scope.admin else MEMBER_SEARCH_SQL
        rows = session.execute(text(sql), params).all()
    hits = [
        SearchHit(entry=CatalogEntryRead.model_validate(row), score=row.search_score)
        for row in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = paths.encode_cursor(CURSOR_KIND, last.search_score, last.id)
    return Page(hits, next_cursor)
