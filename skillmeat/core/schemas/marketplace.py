"""Validated inputs and read models of marketplace sources and their catalog.

Each rule mirrors a CHECK constraint in `skillmeat.core.models.marketplace`, so bad
input is refused here with a sentence a person can act on, before PostgreSQL sees it.
"""

import datetime as dt
import itertools
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from skillmeat.core.errors import ValidationFailed
from skillmeat.core.limits import InputLimits
from skillmeat.core.models.enums import (
    ArtifactType,
    CatalogStatus,
    ScanState,
    TrustLevel,
    Visibility,
)

__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "MAX_MANUAL_MAP_PATHS",
    "MAX_NAME_CHARS",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MAX_UPSTREAM_URL_CHARS",
    "MAX_VERSION_SHA_CHARS",
    "CatalogEntryRead",
    "DetectedArtifact",
    "ImportConflict",
    "ImportConflictMember",
    "SearchHit",
    "SourceCreate",
    "SourceRead",
    "SourceUpdate",
    "default_name",
    "normalize_repo_url",
    "validate_artifacts",
]

_ERROR_TYPE = "skillmeat_invalid"


def _refuse(reason: str) -> PydanticCustomError:
    # The reason goes in as context, not as the template, so braces in a value stay literal.
    return PydanticCustomError(_ERROR_TYPE, "{reason}", {"reason": reason})


def _show(value: object) -> str:
    # Slice before repr: a 20 MiB value must not be copied whole into a message.
    text = repr(value[:80] if isinstance(value, str) and len(value) > 80 else value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- clean text: the one rule for every text field ------------------------------------

MAX_UPSTREAM_URL_CHARS = 2048
MAX_VERSION_SHA_CHARS = 256
MAX_MANUAL_MAP_PATHS = 100

# C0 (NUL is reported apart: PostgreSQL cannot store it at all), DEL and C1; the bidi
# embeddings, overrides and isolates of "Trojan Source" (U+202A-U+202E, U+2066-U+2069).
# The CHECKs `<column>_clean` in the models hold the same classes.
_CONTROLS = r"\x01-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_UNCLEAN_TEXT = re.compile(f"[{_CONTROLS}]")
_UNCLEAN_PATH = re.compile(f"[{_CONTROLS}\\\\]")
_CONTROL_CLASSES = (
    "control characters (C0, C1, DEL)",
    "bidi controls (U+202A-U+202E, U+2066-U+2069)",
)


def _char_name(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X}"


def _clean_text(value: str, *, rule: str, path: bool = False) -> str:
    """The NFC form of `value`, refused if it holds what no text field may hold.

    Paths refuse backslashes too (a Windows separator: `..\\..\\x` would be one segment).
    NFC, so that one name typed on macOS (NFD) and on Linux (NFC) is one value. `rule` is
    the field's own rule, appended to the refusal.
    """
    if _unencodable(value):
        why = "contains a NUL character or an unpaired surrogate"
    elif found := (_UNCLEAN_PATH if path else _UNCLEAN_TEXT).search(value):
        classes = (*_CONTROL_CLASSES, "backslashes") if path else _CONTROL_CLASSES
        refused = ", ".join(classes[:-1]) + " and " + classes[-1]
        why = (
            f"contains {_char_name(found.group())} at index {found.start()}: {refused} are refused"
        )
    else:
        return unicodedata.normalize("NFC", value)
    raise _refuse(f"{_show(value)} is not allowed ({why}; {rule})")


# --- repository URL ---------------------------------------------------------------

_GITHUB_HOSTS = frozenset({"github.com", "www.github.com"})
_OWNER_RE = re.compile(r"[A-Za-z0-9](?:-?[A-Za-z0-9])*")
_REPO_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP_RE = re.compile(r"([^@/:]+)@([^/:]+):(.*)", re.DOTALL)
_ALLOWED_URLS = (
    "https://github.com/<owner>/<repo>, optionally with .git, a trailing slash, http://, "
    "www. or no scheme, or git@github.com:<owner>/<repo>.git or "
    "ssh://git@github.com/<owner>/<repo>.git"
)


def normalize_repo_url(value: str) -> str:
    """Canonical `https://github.com/<owner>/<repo>` of a pasted GitHub repository URL.

    Case is kept (the database compares it case-insensitively); the result is a fixed
    point. Anything else raises `ValidationFailed` (a `ValueError`) naming what is allowed.
    """

    def refuse(why: str) -> ValidationFailed:
        return ValidationFailed("repo_url", value, f"{_show(value)} {why}")

    if not isinstance(value, str):
        raise refuse(f"is not allowed (must be a string: {_ALLOWED_URLS})")
    text = value.strip()
    if not text:
        raise refuse(f"is not allowed (must be a GitHub repository URL: {_ALLOWED_URLS})")
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in text):
        raise refuse("is not allowed (contains whitespace or control characters)")
    if "?" in text or "#" in text:
        raise refuse(
            "is not allowed (query strings and fragments are refused: "
            "give https://github.com/<owner>/<repo>)"
        )

    scheme_match = _SCHEME_RE.match(text)
    scp_match = None if "://" in text else _SCP_RE.fullmatch(text)
    if scheme_match:
        scheme = scheme_match.group(1).lower()
        authority, _, path = text[scheme_match.end() :].partition("/")
        if scheme == "ssh":
            user, at, host = authority.rpartition("@")
            if not at or user != "git":
                raise refuse(
                    "is not allowed (an ssh URL must be ssh://git@github.com/<owner>/<repo>)"
                )
        elif scheme in ("http", "https"):
            host = authority
        else:
            raise refuse(f"is not allowed (scheme {scheme}:// is not supported: {_ALLOWED_URLS})")
    elif scp_match:
        user, host, path = scp_match.groups()
        if user != "git":
            raise refuse("is not allowed (an ssh address must be git@github.com:<owner>/<repo>)")
    elif "://" in text:
        raise refuse(f"is not allowed (must be a GitHub repository URL: {_ALLOWED_URLS})")
    else:
        host, _, path = text.partition("/")

    if not scheme_match and not scp_match and not path:
        raise refuse(f"is not allowed (must be a GitHub repository URL: {_ALLOWED_URLS})")
    if "@" in host:
        raise refuse("is not allowed (credentials in the URL are refused: give the bare URL)")
    if ":" in host:
        raise refuse("is not allowed (a port is refused: the host must be github.com)")
    if host.lower() not in _GITHUB_HOSTS:
        raise refuse(f"is not allowed (the host must be github.com, not {host!r})")

    parts = path.rstrip("/").split("/") if path.rstrip("/") else []
    if "" in parts:
        raise refuse("is not allowed (the path has an empty segment: give <owner>/<repo>)")
    if len(parts) < 2:
        raise refuse("is not allowed (it names no repository: give github.com/<owner>/<repo>)")
    if len(parts) > 2:
        raise refuse(
            "is not allowed (it points inside a repository: give the repository URL "
            "and put the branch, tag or commit in branch_or_ref)"
        )
    owner, repo = parts
    if repo.lower().endswith(".git"):
        repo = repo[: -len(".git")]
    if len(owner) > 39 or not _OWNER_RE.fullmatch(owner):
        raise refuse(
            f"is not allowed (owner {owner!r} must be 1-39 letters, digits or single inner hyphens)"
        )
    if not _REPO_RE.fullmatch(repo) or repo in (".", "..") or repo.lower().endswith(".git"):
        raise refuse(
            f"is not allowed (repository name {repo!r} must be 1-100 of letters, digits, "
            "'.', '_' or '-', not '.' or '..', and not end in .git)"
        )
    return f"https://github.com/{owner}/{repo}"


def _repo_url(value: str) -> str:
    try:
        return normalize_repo_url(value)
    except ValidationFailed as exc:
        raise _refuse(exc.reason) from exc


RepoUrl = Annotated[str, AfterValidator(_repo_url)]


# --- other column rules ------------------------------------------------------------

# Same expression as the CHECK; \Z because Python's $ also matches before a final newline.
_DOTDOT_SEGMENT = re.compile(r"(?:^|/)\.\.(?:/|\Z)")
# An empty or "." segment: "a//b", "a/", "./a", "a/./b" (the path "." alone is the root).
_NON_CANONICAL = re.compile(r"(?:^|/)\.?(?:/|\Z)")


MAX_PATH_BYTES = 1024  # the CHECK's limit too: detected_path sits in two B-tree indexes


def _unencodable(value: str) -> bool:
    """True for text PostgreSQL cannot store: NUL, or an unpaired UTF-16 surrogate."""
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_PATH_RULE = (
    "must be a relative path inside the repository such as 'skills/review' or '.' for its root"
)


def _relative_path(value: str) -> str:
    value = _clean_text(value, rule=_PATH_RULE, path=True)
    if len(value.encode("utf-8")) > MAX_PATH_BYTES:
        why = f"is {len(value.encode('utf-8'))} bytes long (at most {MAX_PATH_BYTES})"
    elif value == "":
        why = "is empty"
    elif value.startswith("/"):
        why = "starts with '/'"
    elif _DOTDOT_SEGMENT.search(value):
        why = "has a '..' segment"
    elif value != "." and _NON_CANONICAL.search(value):
        why = "has an empty or '.' segment (write it without '//', './' or a trailing '/')"
    else:
        return value
    raise _refuse(f"{_show(value)} is not allowed ({why}; {_PATH_RULE})")


RelativePath = Annotated[str, AfterValidator(_relative_path)]


_REF_RULE = (
    "must be a branch, tag or commit of 1-255 characters without whitespace, "
    "such as 'main' or 'HEAD'"
)


def _branch_or_ref(value: str) -> str:
    ref = _clean_text(value.strip(), rule=_REF_RULE)
    if not ref:
        why = "is blank"
    elif len(ref) > 255:
        why = f"has {len(ref)} characters"
    elif any(c.isspace() or unicodedata.category(c) in ("Cc", "Cs") for c in ref):
        why = "contains whitespace, control characters or an unpaired surrogate"
    else:
        return ref
    raise _refuse(f"{_show(value)} is not allowed ({why}; {_REF_RULE})")


BranchOrRef = Annotated[str, AfterValidator(_branch_or_ref)]

_ARTIFACT_TYPES = tuple(kind.value for kind in ArtifactType)


def _manual_map_shape(value: Any) -> Any:
    """Check the keys, accept `{"skill": "path"}` for `{"skill": ["path"]}`, and count the
    paths before any is validated (a 50,000-path map is refused without 50,000 errors)."""
    if not isinstance(value, Mapping):
        raise _refuse(
            f"{_show(value)} is not allowed (must be a mapping of artifact type to a path "
            "or a list of paths)"
        )
    shaped: dict[Any, Any] = {}
    total = 0
    for key, paths in value.items():
        if not isinstance(key, str) or key not in _ARTIFACT_TYPES:
            raise _refuse(
                f"manual_map key {_show(key)} is not allowed (must be one of: "
                f"{', '.join(_ARTIFACT_TYPES)})"
            )
        if isinstance(paths, str):
            paths = [paths]
        elif isinstance(paths, Iterable) and not isinstance(paths, bytes | Mapping):
            # Never more than the limit + 1 taken from an iterator, however long it is.
            paths = list(itertools.islice(paths, MAX_MANUAL_MAP_PATHS - total + 1))
        shaped[key] = paths
        if isinstance(paths, list):
            total += len(paths)
        if total > MAX_MANUAL_MAP_PATHS:
            raise _refuse(
                f"manual_map is not allowed (has more than {MAX_MANUAL_MAP_PATHS} paths, "
                f"counted up to manual_map[{key!r}]; at most {MAX_MANUAL_MAP_PATHS} paths "
                "in total across all artifact types, as sent)"
            )
    return shaped


def _manual_map_tidy(value: dict[ArtifactType, list[str]]) -> dict[ArtifactType, list[str]]:
    tidy: dict[ArtifactType, list[str]] = {}
    for kind, paths in value.items():
        if not paths:
            raise _refuse(
                f"manual_map[{kind.value!r}] is an empty list, which is not allowed (must "
                "list at least one path, or leave the key out)"
            )
        tidy[kind] = list(dict.fromkeys(paths))
    return tidy


ManualMap = Annotated[
    dict[ArtifactType, list[RelativePath]],
    BeforeValidator(_manual_map_shape),
    AfterValidator(_manual_map_tidy),
]

# Same expression as the CHECK; NUL is refused too (PostgreSQL text cannot hold it).
_UPSTREAM_URL_RE = re.compile(r"https://[A-Za-z0-9.-]+(?::[0-9]+)?(?:/[^\s\x00]*)?")


_UPSTREAM_URL_RULE = (
    f"must be an https:// URL of at most {MAX_UPSTREAM_URL_CHARS} characters: host of "
    "letters, digits, '.' or '-', optional port, optional path without whitespace"
)


def _upstream_url(value: str) -> str:
    url = _clean_text(value, rule=_UPSTREAM_URL_RULE)
    if len(url) > MAX_UPSTREAM_URL_CHARS:
        raise _refuse(
            f"{_show(value)} is not allowed (has {len(url)} characters; {_UPSTREAM_URL_RULE})"
        )
    if not _UPSTREAM_URL_RE.fullmatch(url):
        raise _refuse(f"{_show(value)} is not allowed ({_UPSTREAM_URL_RULE})")
    return url


UpstreamUrl = Annotated[str, AfterValidator(_upstream_url)]


_VERSION_SHA_RULE = (
    f"must be a non-blank commit SHA or version of at most {MAX_VERSION_SHA_CHARS} characters"
)


def _version_sha(value: str) -> str:
    sha = _clean_text(value.strip(), rule=_VERSION_SHA_RULE)
    if not sha:
        why = "is blank"
    elif len(sha) > MAX_VERSION_SHA_CHARS:
        why = f"has {len(sha)} characters"
    else:
        return sha
    raise _refuse(f"{_show(value)} is not allowed ({why}; {_VERSION_SHA_RULE})")


VersionSha = Annotated[str, AfterValidator(_version_sha)]

_CONFIDENCE_RANGE = "between 0 and 100 with at most two decimals"
_CONFIDENCE_RULE = f"must be {_CONFIDENCE_RANGE}"
_HUNDREDTH = Decimal("0.01")


def _confidence(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(f"{_show(value)} is not allowed (must be a number {_CONFIDENCE_RANGE})")
    # Compared before any float conversion (a huge int would overflow); NaN fails it too.
    if not 0 <= value <= 100:
        raise _refuse(f"{_show(value)} is not allowed ({_CONFIDENCE_RULE})")
    # PostgreSQL casts float8 to numeric through 15 significant digits (DBL_DIG), so the
    # CHECK accepts 0.1 + 0.2 (0.30000000000000004 -> 0.3) and refuses 12.345; same here.
    exact = Decimal(f"{value:.15g}")
    if exact != exact.quantize(_HUNDREDTH):
        raise _refuse(
            f"{value!r} is not allowed (has more than two decimals; {_CONFIDENCE_RULE}, "
            "so round it first)"
        )
    return float(exact) + 0.0  # + 0.0 turns -0.0 into 0.0


ConfidenceScore = Annotated[float, BeforeValidator(_confidence)]


# --- harvesting (README links) -------------------------------------------------------

DEFAULT_HARVEST_LIMIT = 5
MAX_HARVEST_LIMIT = 20  # the CHECK harvest_limit_range holds the same
HarvestLinks = Annotated[bool, Field(strict=True)]
HarvestLimit = Annotated[int, Field(strict=True, ge=0, le=MAX_HARVEST_LIMIT)]


# --- inputs ------------------------------------------------------------------------


def _manual_map_json(manual_map: Mapping[ArtifactType, list[str]]) -> dict[str, list[str]]:
    return {kind.value: list(paths) for kind, paths in manual_map.items()}


class SourceCreate(BaseModel):
    """A GitHub repository a project registers as a marketplace source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_id: uuid.UUID
    repo_url: RepoUrl
    branch_or_ref: BranchOrRef = "HEAD"
    root_hint: RelativePath | None = None
    manual_map: ManualMap = Field(default_factory=dict)
    trust_level: TrustLevel = TrustLevel.UNSIGNED
    visibility: Visibility = Visibility.PRIVATE
    # README link harvesting (record_harvested_links): off unless asked for.
    harvest_links: HarvestLinks = False
    harvest_limit: HarvestLimit = DEFAULT_HARVEST_LIMIT

    def manual_map_json(self) -> dict[str, list[str]]:
        """manual_map with plain string keys, ready for the jsonb column."""
        return _manual_map_json(self.manual_map)


class SourceUpdate(BaseModel):
    """Changes to a source: a field left out (or None) stays as it is.

    The exception is `root_hint`: sent explicitly as None, it clears the hint (the only
    nullable column here). Use `changes()` for the column values to assign.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    repo_url: RepoUrl | None = None
    branch_or_ref: BranchOrRef | None = None
    root_hint: RelativePath | None = None
    manual_map: ManualMap | None = None
    trust_level: TrustLevel | None = None
    visibility: Visibility | None = None
    harvest_links: HarvestLinks | None = None
    harvest_limit: HarvestLimit | None = None

    def manual_map_json(self) -> dict[str, list[str]] | None:
        """manual_map with plain string keys (None when not being changed)."""
        return None if self.manual_map is None else _manual_map_json(self.manual_map)

    def changes(self) -> dict[str, Any]:
        """Column name -> new value, for the fields that were sent (manual_map as JSON)."""
        changes: dict[str, Any] = {}
        for name in type(self).model_fields:
            if name not in self.model_fields_set:
                continue
            value = getattr(self, name)
            if value is None and name != "root_hint":
                continue
            changes[name] = self.manual_map_json() if name == "manual_map" else value
        return changes


# --- catalog content: name, description, tags -------------------------------------

MAX_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 2000
MAX_TAGS = 20
MAX_TAG_CHARS = 40
MAX_EXCLUSION_REASON_CHARS = 500

_NAME_RULE = f"must be a non-blank name of at most {MAX_NAME_CHARS} characters"
_DESCRIPTION_RULE = f"must be at most {MAX_DESCRIPTION_CHARS} characters (whitespace collapsed)"
_TAG_RULE = f"must be non-blank tags of at most {MAX_TAG_CHARS} characters each"


def default_name(detected_path: str) -> str | None:
    """The name of an artifact whose files give none: the path's last segment without
    its extension ('.hidden' stays whole); None for the root '.' (the repository's name
    is used, which only the source knows). The migration backfills the same rule."""
    if detected_path == ".":
        return None
    segment = detected_path.rsplit("/", 1)[-1]
    stem = segment.rsplit(".", 1)[0] if "." in segment else segment
    return (stem or segment)[:MAX_NAME_CHARS]


def _name(value: str) -> str:
    name = _clean_text(value.strip(), rule=_NAME_RULE)
    if not name:
        why = "is blank"
    elif len(name) > MAX_NAME_CHARS:
        why = f"has {len(name)} characters"
    else:
        return name
    raise _refuse(f"{_show(value)} is not allowed ({why}; {_NAME_RULE})")


def _description(value: str | None) -> str | None:
    if value is None:
        return None
    # Collapsed before the length is judged: a description is shown as one paragraph.
    text = _clean_text(" ".join(value.split()), rule=_DESCRIPTION_RULE)
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise _refuse(
            f"{_show(value)} is not allowed (has {len(text)} characters; {_DESCRIPTION_RULE})"
        )
    return text or None


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise _refuse(f"{_show(value)} is not allowed (must be a list of tags)")
    tags: list[str] = []
    for item in itertools.islice(value, 10 * MAX_TAGS + 1):
        if not isinstance(item, str):
            raise _refuse(f"tag {_show(item)} is not allowed (must be a string)")
        tag = _clean_text(item.strip().lower(), rule=_TAG_RULE)
        if not tag or len(tag) > MAX_TAG_CHARS:
            why = "is blank" if not tag else f"has {len(tag)} characters"
            raise _refuse(f"tag {_show(item)} is not allowed ({why}; {_TAG_RULE})")
        tags.append(tag)
    tags = list(dict.fromkeys(tags))
    if len(tags) > MAX_TAGS:
        raise _refuse(
            f"tags is not allowed (has more than {MAX_TAGS} distinct tags; at most {MAX_TAGS}, "
            "lower-cased and de-duplicated)"
        )
    return tags


Name = Annotated[str, AfterValidator(_name)]
Description = Annotated[str | None, AfterValidator(_description)]
Tags = Annotated[list[str], BeforeValidator(_tags)]


class DetectedArtifact(BaseModel):
    """One artifact a scan found in a source, before it becomes a catalog entry.

    name, description and tags are what the artifact's own files say; without a name
    the path's last segment without extension is used (the repository's name for '.').
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifact_type: ArtifactType
    detected_path: RelativePath
    upstream_url: UpstreamUrl
    detected_version_sha: VersionSha
    confidence_score: ConfidenceScore
    name: Name | None = None
    description: Description = None
    tags: Tags = Field(default_factory=list)

    @model_validator(mode="after")
    def _named(self) -> "DetectedArtifact":
        if self.name is None:
            # frozen: set through the instance dict, once, during validation
            object.__setattr__(self, "name", default_name(self.detected_path))
        return self


def _batch_error(where: str, exc: ValidationError) -> ValidationFailed:
    error = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in error["loc"])
    field = f"{where}.{loc}" if loc else where
    value = error.get("input")
    if error["type"] == _ERROR_TYPE:
        reason = error["msg"]
    elif error["type"] == "missing":
        reason = "is missing (the field is required)"
        value = None
    elif error["type"] == "extra_forbidden":
        allowed = ", ".join(DetectedArtifact.model_fields)
        reason = f"{_show(loc)} is not allowed (unknown field; allowed: {allowed})"
    else:
        reason = f"{_show(value)} is not allowed ({error['msg']})"
    return ValidationFailed(field, value, reason)


def validate_artifacts(
    items: Iterable[DetectedArtifact | Mapping[str, Any]],
    *,
    max_artifacts: int | None = None,
) -> list[DetectedArtifact]:
    """Validate a scan's batch, refusing it at the first bad item, repeated path, or the
    item past `max_artifacts` (default: `SKILLMEAT_MAX_SCAN_ARTIFACTS`, 100,000).

    Raises `ValidationFailed` whose field reads like `artifacts[3].confidence_score`.
    Paths are compared in NFC, so two spellings of `café` are one path (a duplicate).
    """
    limit = InputLimits().max_scan_artifacts if max_artifacts is None else max_artifacts
    artifacts: list[DetectedArtifact] = []
    first_index: dict[tuple[ArtifactType, str], int] = {}
    for index, item in enumerate(items):
        if index == limit:
            # Stops at the first item past the limit: an endless iterator is not drained.
            raise ValidationFailed(
                "artifacts",
                f"more than {limit} items",
                f"more than {limit} artifacts is not allowed (at most {limit} per "
                "sync_catalog call, set by SKILLMEAT_MAX_SCAN_ARTIFACTS; split the scan "
                "or raise the setting)",
            )
        if isinstance(item, DetectedArtifact) and isinstance(item.artifact_type, ArtifactType):
            artifact = item
        elif isinstance(item, DetectedArtifact):
            # Built with model_copy(update=...) or model_construct(): never validated.
            try:
                artifact = DetectedArtifact.model_validate(dict(item.__dict__))
            except ValidationError as exc:
                raise _batch_error(f"artifacts[{index}]", exc) from exc
        elif isinstance(item, Mapping):
            try:
                artifact = DetectedArtifact.model_validate(dict(item))
            except ValidationError as exc:
                raise _batch_error(f"artifacts[{index}]", exc) from exc
        else:
            raise ValidationFailed(
                f"artifacts[{index}]",
                item,
                f"{_show(item)} is not allowed (must be a DetectedArtifact or a mapping "
                "of its fields)",
            )
        key = (artifact.artifact_type, artifact.detected_path)
        first = first_index.setdefault(key, index)
        if first != index:
            raise ValidationFailed(
                f"artifacts[{index}].detected_path",
                artifact.detected_path,
                f"{_show(artifact.detected_path)} is not allowed (artifacts[{first}] already "
                f"has it for artifact_type {artifact.artifact_type.value!r}; each type and "
                "path may appear once per batch, paths compared in NFC)",
            )
        artifacts.append(artifact)
    return artifacts


# --- read models -------------------------------------------------------------------


class SourceRead(BaseModel):
    """A stored source, built from a `MarketplaceSource` row."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: uuid.UUID
    project_id: uuid.UUID
    repo_url: str
    branch_or_ref: str
    root_hint: str | None
    manual_map: dict[str, list[str]]
    last_sync: dt.datetime | None
    last_error: str | None
    trust_level: TrustLevel
    visibility: Visibility
    created_at: dt.datetime
    updated_at: dt.datetime
    # The latest scan's state (None: never scanned) and, while it is queued, when it
    # is due; read by the listing in the same query (a lateral join).
    scan_state: ScanState | None = None
    next_scan_at: dt.datetime | None = None
    # Whether an encrypted token is stored (never the token or its ciphertext).
    has_token: bool = False
    harvest_links: bool = False
    harvest_limit: int = DEFAULT_HARVEST_LIMIT
    # Set when README harvesting created the source; discovered_by is the source
    # whose README linked it (None once that one is deleted).
    discovered_at: dt.datetime | None = None
    discovered_by: uuid.UUID | None = None


class CatalogEntryRead(BaseModel):
    """A stored catalog entry, built from a `MarketplaceCatalogEntry` row."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: uuid.UUID
    source_id: uuid.UUID
    artifact_type: ArtifactType
    detected_path: str
    upstream_url: str
    detected_version_sha: str
    detected_at: dt.datetime
    confidence_score: float
    status: CatalogStatus
    imported_at: dt.datetime | None
    imported_version_sha: str | None
    name: str
    description: str | None
    tags: list[str]
    excluded_at: dt.datetime | None
    excluded_reason: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class SearchHit(BaseModel):
    """One search result: the entry and its score (higher first; exact name >= 3, name
    prefix >= 2, else full-text rank in [0, 1); a typo fallback scores by similarity)."""

    model_config = ConfigDict(frozen=True)

    entry: CatalogEntryRead
    score: float


class ImportConflictMember(BaseModel):
    """An entry of a conflict: to be imported (imported=False) or already imported."""

    model_config = ConfigDict(frozen=True)

    entry: CatalogEntryRead
    repo_url: str
    imported: bool
    # Distinct within the group and from the project's imported names of the type;
    # an imported entry keeps its own name.
    suggested_name: str


class ImportConflict(BaseModel):
    """Entries of one project that would share (artifact_type, lower(name)) once imported."""

    model_config = ConfigDict(frozen=True)

    project_id: uuid.UUID
    artifact_type: ArtifactType
    name: str  # lower-cased: the key the entries share
    members: list[ImportConflictMember]
