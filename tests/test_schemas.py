"""Validated inputs refuse what the CHECK constraints would refuse, with messages people can act on.

Pure Python: no database and no fixtures from conftest.
"""

import datetime as dt
import itertools
import math
import pickle
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from skillmeat.core.errors import SkillmeatError, ValidationFailed
from skillmeat.core.limits import InputLimits
from skillmeat.core.models.enums import ArtifactType, CatalogStatus, TrustLevel, Visibility
from skillmeat.core.schemas import (
    CatalogEntryRead,
    DetectedArtifact,
    SourceCreate,
    SourceRead,
    SourceUpdate,
    normalize_repo_url,
    validate_artifacts,
)

PROJECT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")

# Written independently of the implementation, from REPO_URL_CHECK in the models.
CANONICAL_RE = re.compile(r"https://github\.com/[A-Za-z0-9](-?[A-Za-z0-9])*/[A-Za-z0-9._-]{1,100}")


def satisfies_repo_url_check(url: str) -> bool:
    if not CANONICAL_RE.fullmatch(url):
        return False
    owner, repo = url.split("/")[3:5]
    return len(owner) <= 39 and not url.lower().endswith(".git") and repo not in (".", "..")


def artifact(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "artifact_type": "skill",
        "detected_path": "skills/review",
        "upstream_url": "https://github.com/acme/tools/tree/main/skills/review",
        "detected_version_sha": "0123456789abcdef0123456789abcdef01234567",
        "confidence_score": 87.5,
    }
    fields.update(overrides)
    return fields


def only_message(exc: ValidationError) -> tuple[tuple[int | str, ...], str]:
    errors = exc.errors()
    assert len(errors) == 1, errors
    return errors[0]["loc"], errors[0]["msg"]


# --- normalize_repo_url --------------------------------------------------------------


@pytest.mark.parametrize(
    "pasted",
    [
        "https://github.com/Acme-Corp/Skill.Pack",
        "https://github.com/Acme-Corp/Skill.Pack.git",
        "https://github.com/Acme-Corp/Skill.Pack.GIT",
        "https://github.com/Acme-Corp/Skill.Pack/",
        "https://github.com/Acme-Corp/Skill.Pack.git//",
        "http://github.com/Acme-Corp/Skill.Pack",
        "https://www.github.com/Acme-Corp/Skill.Pack",
        "HTTPS://GitHub.COM/Acme-Corp/Skill.Pack",
        "github.com/Acme-Corp/Skill.Pack",
        "www.github.com/Acme-Corp/Skill.Pack.git",
        "git@github.com:Acme-Corp/Skill.Pack.git",
        "git@github.com:Acme-Corp/Skill.Pack",
        "ssh://git@github.com/Acme-Corp/Skill.Pack.git",
        "  https://github.com/Acme-Corp/Skill.Pack\n",
    ],
)
def test_pasted_forms_map_to_canonical_url_keeping_case(pasted: str) -> None:
    assert normalize_repo_url(pasted) == "https://github.com/Acme-Corp/Skill.Pack"


@pytest.mark.parametrize(
    ("pasted", "expected_fragment"),
    [
        ("https://github.com/acme/tools/tree/main/skills", "put the branch, tag or commit"),
        ("https://github.com/acme/tools/blob/main/README.md", "points inside a repository"),
        ("https://github.com/acme/tools/issues", "points inside a repository"),
        ("https://github.com/acme/tools?tab=readme", "query strings and fragments"),
        ("https://github.com/acme/tools#readme", "query strings and fragments"),
        ("https://gitlab.com/acme/tools", "the host must be github.com, not 'gitlab.com'"),
        ("https://github.com.evil.example/acme/tools", "the host must be github.com"),
        ("https://github.com/acme", "names no repository"),
        ("https://github.com/", "names no repository"),
        ("https://github.com/acme//tools", "empty segment"),
        ("https://user:pw@github.com/acme/tools", "credentials"),
        ("https://github.com:8443/acme/tools", "a port is refused"),
        ("ftp://github.com/acme/tools", "scheme ftp:// is not supported"),
        ("deploy@github.com:acme/tools.git", "git@github.com:<owner>/<repo>"),
        ("https://github.com/-acme/tools", "owner '-acme'"),
        ("https://github.com/ac--me/tools", "owner 'ac--me'"),
        ("https://github.com/" + "a" * 40 + "/tools", "1-39 letters"),
        ("https://github.com/acme/" + "r" * 101, "1-100 of letters"),
        ("https://github.com/acme/to ols", "whitespace"),
        ("https://github.com/acme/tools%20x", "repository name 'tools%20x'"),
        ("https://github.com/acme/..", "repository name '..'"),
        ("https://github.com/acme/.git", "repository name ''"),
        ("https://github.com/acme/tools.git.git", "not end in .git"),
        ("", "must be a GitHub repository URL"),
        ("tools", "must be a GitHub repository URL"),
    ],
)
def test_non_repository_urls_are_refused_naming_what_is_allowed(
    pasted: str, expected_fragment: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        normalize_repo_url(pasted)
    assert caught.value.field == "repo_url"
    assert caught.value.value == pasted
    assert expected_fragment in str(caught.value)
    assert str(caught.value).startswith(f"repo_url: {pasted!r}"[:40])


def test_repo_url_error_is_a_value_error_and_a_library_error() -> None:
    with pytest.raises(ValueError, match=r"github\.com"):
        normalize_repo_url("https://example.com/a/b")
    with pytest.raises(SkillmeatError):
        normalize_repo_url("https://example.com/a/b")


OWNERS = st.from_regex(r"[A-Za-z0-9](-?[A-Za-z0-9]){0,19}", fullmatch=True)
REPOS = st.from_regex(r"[A-Za-z0-9._-]{1,100}", fullmatch=True).filter(
    lambda name: name not in (".", "..") and not name.lower().endswith(".git")
)


@st.composite
def random_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(text, flips, strict=True))


@dataclass(frozen=True)
class Decoration:
    form: str
    www: bool
    git_suffix: str
    slashes: int
    space_before: str
    space_after: str


DECORATIONS = st.builds(
    Decoration,
    form=st.sampled_from(["https", "http", "bare", "scp", "ssh"]),
    www=st.booleans(),
    git_suffix=st.sampled_from(["", ".git", ".GIT", ".Git"]),
    slashes=st.integers(0, 3),
    space_before=st.sampled_from(["", " ", "\t", "\n "]),
    space_after=st.sampled_from(["", " ", "\n", "\r\n"]),
)


@given(owner=OWNERS, repo=REPOS, decoration=DECORATIONS, data=st.data())
def test_decorated_valid_names_normalize_to_the_canonical_fixed_point(
    owner: str, repo: str, decoration: Decoration, data: st.DataObject
) -> None:
    host = data.draw(random_case("github.com"))
    if decoration.www and decoration.form not in ("scp", "ssh"):
        host = data.draw(random_case("www.")) + host
    path = f"{owner}/{repo}{decoration.git_suffix}" + "/" * decoration.slashes
    pasted = {
        "https": f"{data.draw(random_case('https'))}://{host}/{path}",
        "http": f"{data.draw(random_case('http'))}://{host}/{path}",
        "bare": f"{host}/{path}",
        "scp": f"git@{host}:{path}",
        "ssh": f"ssh://git@{host}/{path}",
    }[decoration.form]
    pasted = decoration.space_before + pasted + decoration.space_after

    canonical = f"https://github.com/{owner}/{repo}"
    assert normalize_repo_url(pasted) == canonical
    assert normalize_repo_url(canonical) == canonical
    assert satisfies_repo_url_check(canonical)


URLISH = st.lists(
    st.sampled_from(
        [
            *"aZ9-._/:@?# \t\n",
            *("github.com", "GitHub.COM", "www.", "https://", "http://", "git@", "ssh://"),
            *(".git", "..", "\u00e9", "\x00", "\u00a0"),
        ]
    ),
    max_size=30,
).map("".join)


@given(st.one_of(st.text(), URLISH, URLISH.map(lambda tail: "https://github.com/" + tail)))
def test_any_text_is_refused_or_becomes_a_canonical_fixed_point(text: str) -> None:
    try:
        result = normalize_repo_url(text)
    except ValueError as exc:
        assert isinstance(exc, ValidationFailed)
        assert exc.field == "repo_url"
        return
    assert satisfies_repo_url_check(result), result
    assert normalize_repo_url(result) == result


# --- SourceCreate -----------------------------------------------------------------


def test_source_create_defaults_and_normalized_url() -> None:
    source = SourceCreate(project_id=PROJECT_ID, repo_url="git@github.com:Acme/Tools.git")
    assert source.repo_url == "https://github.com/Acme/Tools"
    assert source.branch_or_ref == "HEAD"
    assert source.root_hint is None
    assert source.manual_map == {}
    assert source.manual_map_json() == {}
    assert source.trust_level is TrustLevel.UNSIGNED
    assert source.visibility is Visibility.PRIVATE


def test_source_create_bad_url_error_names_repo_url() -> None:
    with pytest.raises(ValidationError) as caught:
        SourceCreate(project_id=PROJECT_ID, repo_url="https://github.com/acme/tools/tree/dev")
    loc, msg = only_message(caught.value)
    assert loc == ("repo_url",)
    assert "'https://github.com/acme/tools/tree/dev' is not allowed" in msg
    assert "branch_or_ref" in msg


def test_source_create_is_frozen_and_forbids_unknown_fields() -> None:
    with pytest.raises(ValidationError) as caught:
        SourceCreate.model_validate(
            {"project_id": str(PROJECT_ID), "repo_url": "github.com/a/b", "last_error": "x"}
        )
    loc, _ = only_message(caught.value)
    assert loc == ("last_error",)
    assert caught.value.errors()[0]["type"] == "extra_forbidden"
    source = SourceCreate(project_id=PROJECT_ID, repo_url="github.com/a/b")
    with pytest.raises(ValidationError):
        source.repo_url = "https://github.com/c/d"  # type: ignore[misc]


def test_branch_or_ref_is_stripped_and_checked() -> None:
    source = SourceCreate(project_id=PROJECT_ID, repo_url="github.com/a/b", branch_or_ref=" v1.2 ")
    assert source.branch_or_ref == "v1.2"
    for bad, why in [("   ", "is blank"), ("main dev", "whitespace"), ("x" * 256, "256 char")]:
        with pytest.raises(ValidationError) as caught:
            SourceCreate(project_id=PROJECT_ID, repo_url="github.com/a/b", branch_or_ref=bad)
        loc, msg = only_message(caught.value)
        assert loc == ("branch_or_ref",)
        assert why in msg
        assert "1-255 characters without whitespace" in msg
    assert (
        len(
            SourceCreate(
                project_id=PROJECT_ID, repo_url="github.com/a/b", branch_or_ref="x" * 255
            ).branch_or_ref
        )
        == 255
    )


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/skills", "starts with '/'"),
        ("", "is empty"),
        ("..", "has a '..' segment"),
        ("skills/../../etc", "has a '..' segment"),
        ("skills/..", "has a '..' segment"),
        ("a\x00b", "contains a NUL character or an unpaired surrogate"),
        ("a\ud800b", "contains a NUL character or an unpaired surrogate"),
        ("a//b", "has an empty or '.' segment"),
        ("skills/x/", "has an empty or '.' segment"),
        ("./x", "has an empty or '.' segment"),
        ("a/./b", "has an empty or '.' segment"),
    ],
)
def test_root_hint_must_be_a_relative_path(path: str, why: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SourceCreate(project_id=PROJECT_ID, repo_url="github.com/a/b", root_hint=path)
    loc, msg = only_message(caught.value)
    assert loc == ("root_hint",)
    assert msg.startswith(f"{path!r} is not allowed ({why}")
    assert "relative path inside the repository" in msg


def test_a_path_longer_than_the_index_allows_is_refused() -> None:
    fits = "é/" * 300 + "x"  # 901 bytes in UTF-8
    assert SourceCreate(project_id=PROJECT_ID, repo_url="github.com/a/b", root_hint=fits).root_hint
    with pytest.raises(ValidationError) as caught:
        SourceCreate(project_id=PROJECT_ID, repo_url="github.com/a/b", root_hint="é/" * 400 + "x")
    loc, msg = only_message(caught.value)
    assert loc == ("root_hint",)
    assert "is 1201 bytes long (at most 1024)" in msg


@pytest.mark.parametrize("path", [".", "skills", "a/b/c", "..foo", "foo..", "a/..b/c", ".hidden/x"])
def test_relative_paths_the_database_accepts_are_accepted(path: str) -> None:
    source = SourceCreate(project_id=PROJECT_ID, repo_url="github.com/a/b", root_hint=path)
    assert source.root_hint == path


def test_manual_map_accepts_single_strings_and_deduplicates_in_order() -> None:
    source = SourceCreate(
        project_id=PROJECT_ID,
        repo_url="github.com/a/b",
        manual_map={
            "skill": "skills/review",
            ArtifactType.AGENT: ["agents/b", "agents/a", "agents/b", "agents/a", "agents/c"],
        },
    )
    assert source.manual_map == {
        ArtifactType.SKILL: ["skills/review"],
        ArtifactType.AGENT: ["agents/b", "agents/a", "agents/c"],
    }
    json_map = source.manual_map_json()
    assert json_map == {"skill": ["skills/review"], "agent": ["agents/b", "agents/a", "agents/c"]}
    assert all(type(key) is str for key in json_map)


@pytest.mark.parametrize("key", ["skills", "Skill", "SKILL", "widget", 3])
def test_manual_map_unknown_key_is_named_with_the_allowed_values(key: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        SourceCreate(project_id=PROJECT_ID, repo_url="github.com/a/b", manual_map={key: ["x"]})
    loc, msg = only_message(caught.value)
    assert loc == ("manual_map",)
    assert f"manual_map key {key!r} is not allowed" in msg
    assert "skill, agent, command, mcp, plugin, hook, bundle" in msg


def test_manual_map_empty_list_and_bad_paths_are_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        SourceCreate(project_id=PROJECT_ID, repo_url="github.com/a/b", manual_map={"hook": []})
    loc, msg = only_message(caught.value)
    assert loc == ("manual_map",)
    assert "manual_map['hook'] is an empty list" in msg

    with pytest.raises(ValidationError) as caught:
        SourceCreate(
            project_id=PROJECT_ID,
            repo_url="github.com/a/b",
            manual_map={"hook": ["hooks/ok", "/abs"]},
        )
    loc, msg = only_message(caught.value)
    assert loc == ("manual_map", "hook", 1)
    assert "'/abs' is not allowed (starts with '/'" in msg

    with pytest.raises(ValidationError) as caught:
        SourceCreate(project_id=PROJECT_ID, repo_url="github.com/a/b", manual_map=["skill"])
    loc, msg = only_message(caught.value)
    assert loc == ("manual_map",)
    assert "must be a mapping of artifact type" in msg


# --- SourceUpdate -----------------------------------------------------------------


def test_source_update_changes_only_sent_fields() -> None:
    assert SourceUpdate().changes() == {}
    update = SourceUpdate(branch_or_ref=" dev ", manual_map={"mcp": "servers/x"})
    assert update.changes() == {"branch_or_ref": "dev", "manual_map": {"mcp": ["servers/x"]}}


def test_source_update_root_hint_none_clears_but_other_none_leaves_unchanged() -> None:
    update = SourceUpdate.model_validate(
        {"root_hint": None, "branch_or_ref": None, "visibility": None}
    )
    assert update.changes() == {"root_hint": None}
    assert SourceUpdate(root_hint="plugins").changes() == {"root_hint": "plugins"}


def test_source_update_validates_like_create() -> None:
    update = SourceUpdate(repo_url="ssh://git@github.com/New/Name.git", trust_level="signed")
    assert update.changes() == {
        "repo_url": "https://github.com/New/Name",
        "trust_level": TrustLevel.SIGNED,
    }
    with pytest.raises(ValidationError) as caught:
        SourceUpdate(root_hint="../up")
    assert only_message(caught.value)[0] == ("root_hint",)
    with pytest.raises(ValidationError) as caught:
        SourceUpdate.model_validate({"project_id": str(PROJECT_ID)})
    assert caught.value.errors()[0]["type"] == "extra_forbidden"


# --- DetectedArtifact -------------------------------------------------------------


@pytest.mark.parametrize("score", [0, 100, 0.0, 100.0, 0.01, 99.99, 12.34, 50])
def test_confidence_boundaries_and_two_decimals_are_accepted(score: float) -> None:
    detected = DetectedArtifact.model_validate(artifact(confidence_score=score))
    assert detected.confidence_score == score
    assert type(detected.confidence_score) is float


def test_confidence_float_noise_is_accepted_like_postgresql_does() -> None:
    # float8::numeric keeps 15 significant digits: 0.30000000000000004 becomes 0.3.
    detected = DetectedArtifact.model_validate(artifact(confidence_score=0.1 + 0.2))
    assert detected.confidence_score == 0.3
    negative_zero = DetectedArtifact.model_validate(artifact(confidence_score=-0.0))
    assert math.copysign(1.0, negative_zero.confidence_score) == 1.0


@given(st.integers(0, 10_000))
def test_every_hundredth_between_0_and_100_is_accepted(hundredths: int) -> None:
    score = hundredths / 100
    assert DetectedArtifact.model_validate(artifact(confidence_score=score)).confidence_score == (
        score
    )


@pytest.mark.parametrize(
    ("score", "shown", "why"),
    [
        (-0.01, "-0.01", "must be between 0 and 100 with at most two decimals"),
        (100.01, "100.01", "must be between 0 and 100 with at most two decimals"),
        (101, "101", "must be between 0 and 100 with at most two decimals"),
        (12.345, "12.345", "has more than two decimals"),
        (0.001, "0.001", "has more than two decimals"),
        (float("nan"), "nan", "must be between 0 and 100"),
        (float("inf"), "inf", "must be between 0 and 100"),
        (True, "True", "must be a number"),
        ("50", "'50'", "must be a number"),
        (None, "None", "must be a number"),
    ],
)
def test_confidence_out_of_rule_is_refused(score: Any, shown: str, why: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DetectedArtifact.model_validate(artifact(confidence_score=score))
    loc, msg = only_message(caught.value)
    assert loc == ("confidence_score",)
    assert msg.startswith(f"{shown} is not allowed (")
    assert why in msg


@pytest.mark.parametrize("sha", ["", "   ", "\t\n"])
def test_blank_sha_is_refused(sha: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DetectedArtifact.model_validate(artifact(detected_version_sha=sha))
    loc, msg = only_message(caught.value)
    assert loc == ("detected_version_sha",)
    assert msg == (
        f"{sha!r} is not allowed (is blank; must be a non-blank commit SHA or version of at "
        "most 256 characters)"
    )


def test_sha_is_stripped() -> None:
    assert (
        DetectedArtifact.model_validate(
            artifact(detected_version_sha=" abc1 ")
        ).detected_version_sha
        == "abc1"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://github.com/acme/tools",
        "ftp://example.com/x",
        "https://",
        "https://exa mple.com/x",
        "https://example.com/has space",
        "https://user@example.com/x",
        "https://example.com:port/x",
        "github.com/acme/tools",
    ],
)
def test_non_https_upstream_url_is_refused(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DetectedArtifact.model_validate(artifact(upstream_url=url))
    loc, msg = only_message(caught.value)
    assert loc == ("upstream_url",)
    assert msg.startswith(f"{url!r} is not allowed (must be an https:// URL")


@pytest.mark.parametrize(
    "url",
    ["https://github.com", "https://example.com:8443/a?b=c#d", "https://raw.example.com/x/y.md"],
)
def test_https_upstream_urls_are_accepted(url: str) -> None:
    assert DetectedArtifact.model_validate(artifact(upstream_url=url)).upstream_url == url


def test_detected_artifact_forbids_unknown_fields_and_is_frozen() -> None:
    with pytest.raises(ValidationError) as caught:
        DetectedArtifact.model_validate(artifact(status="new"))
    loc, _ = only_message(caught.value)
    assert loc == ("status",)
    detected = DetectedArtifact.model_validate(artifact())
    with pytest.raises(ValidationError):
        detected.detected_path = "elsewhere"  # type: ignore[misc]


def test_detected_path_rule_matches_root_hint_rule() -> None:
    with pytest.raises(ValidationError) as caught:
        DetectedArtifact.model_validate(artifact(detected_path="/etc/passwd"))
    loc, msg = only_message(caught.value)
    assert loc == ("detected_path",)
    assert "'/etc/passwd' is not allowed (starts with '/'" in msg


# --- validate_artifacts ---------------------------------------------------------


def test_validate_artifacts_returns_models_in_order() -> None:
    ready = DetectedArtifact.model_validate(artifact(detected_path="skills/a"))
    batch: list[DetectedArtifact | dict[str, Any]] = [
        ready,
        artifact(detected_path="skills/b", artifact_type="agent"),
    ]
    result = validate_artifacts(iter(batch))
    assert [item.detected_path for item in result] == ["skills/a", "skills/b"]
    assert result[0] is ready
    assert result[1].artifact_type is ArtifactType.AGENT
    assert validate_artifacts([]) == []


def test_validate_artifacts_names_index_and_field() -> None:
    items = [artifact(detected_path=f"skills/{n}") for n in range(5)]
    items[3] = artifact(detected_path="skills/3", confidence_score=120)
    with pytest.raises(ValidationFailed) as caught:
        validate_artifacts(items)
    assert str(caught.value) == (
        "artifacts[3].confidence_score: 120 is not allowed "
        "(must be between 0 and 100 with at most two decimals)"
    )
    assert caught.value.field == "artifacts[3].confidence_score"
    assert caught.value.value == 120


def test_validate_artifacts_reports_missing_unknown_and_wrong_type_fields() -> None:
    missing = artifact()
    del missing["upstream_url"]
    with pytest.raises(ValidationFailed) as caught:
        validate_artifacts([artifact(), missing])
    assert str(caught.value) == "artifacts[1].upstream_url: is missing (the field is required)"

    with pytest.raises(ValidationFailed) as caught:
        validate_artifacts([artifact(colour="red")])
    assert caught.value.field == "artifacts[0].colour"
    assert "'colour' is not allowed (unknown field; allowed: artifact_type," in str(caught.value)

    with pytest.raises(ValidationFailed) as caught:
        validate_artifacts([artifact(artifact_type="widget")])
    assert caught.value.field == "artifacts[0].artifact_type"
    assert str(caught.value).startswith("artifacts[0].artifact_type: 'widget' is not allowed (")
    assert "'skill'" in str(caught.value)

    with pytest.raises(ValidationFailed) as caught:
        validate_artifacts([artifact(), "skills/x"])  # type: ignore[list-item]
    assert str(caught.value) == (
        "artifacts[1]: 'skills/x' is not allowed "
        "(must be a DetectedArtifact or a mapping of its fields)"
    )


def test_validate_artifacts_detects_duplicate_type_and_path() -> None:
    items = [
        artifact(detected_path="skills/a"),
        artifact(detected_path="skills/b"),
        artifact(detected_path="skills/b", artifact_type="agent"),  # other type: allowed
        artifact(detected_path="skills/B"),  # case differs: allowed (unique is exact)
        artifact(detected_path="skills/b", confidence_score=10),
    ]
    with pytest.raises(ValidationFailed) as caught:
        validate_artifacts(items)
    message = str(caught.value)
    assert message.startswith("artifacts[4].detected_path: 'skills/b' is not allowed (")
    assert "artifacts[1] already has it for artifact_type 'skill'" in message
    assert caught.value.value == "skills/b"
    assert len(validate_artifacts(items[:4])) == 4


def test_validation_failed_survives_pickling() -> None:
    error = ValidationFailed("artifacts[0].detected_path", "/x", "'/x' is not allowed")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.field, copy.value, copy.reason, str(copy)) == (
        error.field,
        error.value,
        error.reason,
        "artifacts[0].detected_path: '/x' is not allowed",
    )


# --- bounded, clean input -------------------------------------------------------

# One character of each refused class, and the neighbours of each range (accepted).
CONTROL_CHARS = {
    "NUL-free C0 ESC": "\x1b",
    "C0 BEL": "\x07",
    "C0 first": "\x01",
    "C0 last": "\x1f",
    "DEL": "\x7f",
    "C1 first": "\x80",
    "C1 NEL": "\x85",
    "C1 CSI": "\x9b",
    "C1 last": "\x9f",
    "LRE U+202A": "\u202a",
    "RLO U+202E": "\u202e",
    "LRI U+2066": "\u2066",
    "PDI U+2069": "\u2069",
}
NEIGHBOURS = [" ", "~", "\xa0", "\u2029", "\u202f", "\u2065", "\u206a", "é", "日"]

REPO = "github.com/a/b"


def _source(**fields: Any) -> SourceCreate:
    return SourceCreate(project_id=PROJECT_ID, repo_url=REPO, **fields)


# field -> (how to build an input holding `text`, the error's loc, the field's own rule)
TEXT_FIELDS: dict[str, tuple[Any, tuple[int | str, ...], str]] = {
    "root_hint": (lambda t: _source(root_hint=t), ("root_hint",), "relative path"),
    "update.root_hint": (lambda t: SourceUpdate(root_hint=t), ("root_hint",), "relative path"),
    "manual_map": (
        lambda t: _source(manual_map={"skill": ["skills/ok", t]}),
        ("manual_map", "skill", 1),
        "relative path",
    ),
    "branch_or_ref": (lambda t: _source(branch_or_ref=t), ("branch_or_ref",), "branch, tag"),
    "update.branch_or_ref": (
        lambda t: SourceUpdate(branch_or_ref=t),
        ("branch_or_ref",),
        "branch, tag",
    ),
    "detected_path": (
        lambda t: DetectedArtifact.model_validate(artifact(detected_path=t)),
        ("detected_path",),
        "relative path",
    ),
    "upstream_url": (
        lambda t: DetectedArtifact.model_validate(artifact(upstream_url="https://x.io/" + t)),
        ("upstream_url",),
        "https:// URL",
    ),
    "detected_version_sha": (
        lambda t: DetectedArtifact.model_validate(artifact(detected_version_sha=t)),
        ("detected_version_sha",),
        "commit SHA",
    ),
}
PATH_FIELDS = {"root_hint", "update.root_hint", "manual_map", "detected_path"}


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("char", CONTROL_CHARS.values(), ids=CONTROL_CHARS.keys())
def test_control_and_bidi_characters_are_refused_in_every_text_field(field: str, char: str) -> None:
    build, loc, rule = TEXT_FIELDS[field]
    value = f"skills/a{char}b"
    with pytest.raises(ValidationError) as caught:
        build(value)
    where, msg = only_message(caught.value)
    assert where == loc
    shown = repr("https://x.io/" + value) if field == "upstream_url" else repr(value)
    assert msg.startswith(f"{shown} is not allowed (contains U+{ord(char):04X}")
    assert "control characters (C0, C1, DEL)" in msg
    assert "bidi controls (U+202A-U+202E, U+2066-U+2069)" in msg
    assert rule in msg
    assert char not in msg  # the message shows the escape, never the character itself


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("char", NEIGHBOURS)
def test_characters_next_to_the_refused_ranges_are_accepted(field: str, char: str) -> None:
    if char.isspace() and field not in PATH_FIELDS:
        return  # whitespace: refused by the ref's and the URL's own rules
    TEXT_FIELDS[field][0](f"skills/a{char}b")


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("value", ["..\\..\\etc", "skills\\x", "a\\"])
def test_backslash_is_refused_in_paths_only(field: str, value: str) -> None:
    build, loc, _ = TEXT_FIELDS[field]
    if field not in PATH_FIELDS:
        build(value)  # a ref, SHA or URL may hold one; it is no path separator there
        return
    with pytest.raises(ValidationError) as caught:
        build(value)
    where, msg = only_message(caught.value)
    assert where == loc
    assert msg.startswith(f"{value!r} is not allowed (contains U+005C REVERSE SOLIDUS at index")
    assert "bidi controls (U+202A-U+202E, U+2066-U+2069) and backslashes are refused" in msg


NFD, NFC = "cafe\u0301", "caf\u00e9"


def test_text_fields_are_stored_in_nfc() -> None:
    source = _source(
        root_hint=f"skills/{NFD}", branch_or_ref=NFD, manual_map={"skill": [NFD, NFC, "x"]}
    )
    assert (source.root_hint, source.branch_or_ref) == (f"skills/{NFC}", NFC)
    assert source.manual_map == {ArtifactType.SKILL: [NFC, "x"]}  # one path, not two
    update = SourceUpdate(root_hint=NFD, branch_or_ref=NFD)
    assert update.changes() == {"root_hint": NFC, "branch_or_ref": NFC}
    detected = DetectedArtifact.model_validate(
        artifact(
            detected_path=f"skills/{NFD}",
            upstream_url=f"https://x.io/{NFD}",
            detected_version_sha=NFD,
        )
    )
    assert (detected.detected_path, detected.upstream_url, detected.detected_version_sha) == (
        f"skills/{NFC}",
        f"https://x.io/{NFC}",
        NFC,
    )


def test_nfd_and_nfc_spellings_of_one_path_are_a_duplicate() -> None:
    items = [
        artifact(detected_path=f"skills/{NFC}"),
        artifact(detected_path="skills/other"),
        artifact(detected_path=f"skills/{NFD}"),
    ]
    with pytest.raises(ValidationFailed) as caught:
        validate_artifacts(items)
    assert caught.value.field == "artifacts[2].detected_path"
    assert str(caught.value).startswith(
        f"artifacts[2].detected_path: 'skills/{NFC}' is not allowed (artifacts[0] already has it"
    )
    assert "paths compared in NFC" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "fits", "too_long", "rule"),
    [
        (
            "upstream_url",
            "https://x.io/" + "a" * (2048 - 13),
            "https://x.io/" + "a" * (2049 - 13),
            "(has 2049 characters; must be an https:// URL of at most 2048 characters",
        ),
        (
            "detected_version_sha",
            "f" * 256,
            "é" * 257,
            "(has 257 characters; must be a non-blank commit SHA or version of at most 256",
        ),
    ],
)
def test_url_and_sha_lengths_are_bounded(field: str, fits: str, too_long: str, rule: str) -> None:
    assert getattr(DetectedArtifact.model_validate(artifact(**{field: fits})), field) == fits
    with pytest.raises(ValidationError) as caught:
        DetectedArtifact.model_validate(artifact(**{field: too_long}))
    loc, msg = only_message(caught.value)
    assert loc == (field,)
    assert msg.startswith(repr(too_long[:77])[:77] + "... is not allowed ")
    assert rule in msg


@pytest.mark.parametrize("field", ["upstream_url", "detected_version_sha", "detected_path"])
def test_a_20_mib_value_is_refused_with_a_short_message(field: str) -> None:
    huge = "https://x.io/" + "a" * (20 << 20) if field == "upstream_url" else "a" * (20 << 20)
    with pytest.raises(ValidationFailed) as caught:
        validate_artifacts([artifact(**{field: huge})])
    assert caught.value.field == f"artifacts[0].{field}"
    assert len(str(caught.value)) < 400
    assert "'aaaa" in str(caught.value) or "'https://x.io/aaa" in str(caught.value)
    assert str(len(huge)) in str(caught.value)


def test_a_manual_map_path_is_bounded_in_bytes() -> None:
    fits = "é/" * 341 + "x"  # 1024 bytes
    assert _source(manual_map={"hook": fits}).manual_map == {ArtifactType.HOOK: [fits]}
    with pytest.raises(ValidationError) as caught:
        _source(manual_map={"hook": fits + "x"})
    loc, msg = only_message(caught.value)
    assert loc == ("manual_map", "hook", 0)
    assert "is 1025 bytes long (at most 1024)" in msg


def test_manual_map_holds_at_most_100_paths_in_total() -> None:
    full = {"skill": [f"s/{n}" for n in range(60)], "agent": [f"a/{n}" for n in range(40)]}
    assert sum(len(v) for v in _source(manual_map=full).manual_map.values()) == 100
    for changed in (
        {**full, "hook": "h"},
        {**full, "agent": [*full["agent"], "a/x"]},
        {"skill": [f"s/{n}" for n in range(50_000)]},
    ):
        for build in (_source, SourceUpdate):
            with pytest.raises(ValidationError) as caught:
                build(manual_map=changed)
            loc, msg = only_message(caught.value)  # one error, not 50,000
            assert loc == ("manual_map",)
            assert msg.startswith("manual_map is not allowed (has more than 100 paths")
            assert "at most 100 paths in total across all artifact types" in msg


def test_an_endless_manual_map_iterator_is_not_drained() -> None:
    pulled = itertools.count()
    endless = (f"s/{next(pulled)}" for _ in itertools.count())
    with pytest.raises(ValidationError) as caught:
        _source(manual_map={"skill": endless})
    assert "has more than 100 paths" in only_message(caught.value)[1]
    assert next(pulled) == 101


def test_input_limits_default_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKILLMEAT_MAX_SCAN_ARTIFACTS", raising=False)
    assert InputLimits().max_scan_artifacts == 100_000
    monkeypatch.setenv("SKILLMEAT_MAX_SCAN_ARTIFACTS", "7")
    assert InputLimits().max_scan_artifacts == 7
    monkeypatch.setenv("SKILLMEAT_MAX_SCAN_ARTIFACTS", "0")
    with pytest.raises(ValidationError):
        InputLimits()


def _endless_scan(pulled: list[int]) -> Iterator[dict[str, Any]]:
    """Ten million artifacts, if anyone asked for them all."""
    for n in range(10_000_000):
        pulled.append(n)
        yield artifact(detected_path=f"skills/{n}")


def test_a_scan_past_the_limit_is_refused_without_draining_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SKILLMEAT_MAX_SCAN_ARTIFACTS", "5")
    assert len(validate_artifacts(itertools.islice(_endless_scan([]), 5))) == 5
    pulled: list[int] = []
    with pytest.raises(ValidationFailed) as caught:
        validate_artifacts(_endless_scan(pulled))
    assert len(pulled) == 6  # stopped at the first item past the limit
    assert caught.value.field == "artifacts"
    assert str(caught.value) == (
        "artifacts: more than 5 artifacts is not allowed (at most 5 per sync_catalog call, "
        "set by SKILLMEAT_MAX_SCAN_ARTIFACTS; split the scan or raise the setting)"
    )


def test_an_explicit_limit_overrides_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKILLMEAT_MAX_SCAN_ARTIFACTS", "1")
    assert len(validate_artifacts(itertools.islice(_endless_scan([]), 3), max_artifacts=3)) == 3
    with pytest.raises(ValidationFailed, match="more than 2 artifacts"):
        validate_artifacts(itertools.islice(_endless_scan([]), 3), max_artifacts=2)


# --- read models ----------------------------------------------------------------


@dataclass
class SourceRow:
    id: uuid.UUID
    project_id: uuid.UUID
    repo_url: str
    branch_or_ref: str
    root_hint: str | None
    manual_map: dict[str, Any]
    last_sync: dt.datetime | None
    last_error: str | None
    trust_level: str
    visibility: str
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass
class EntryRow:
    id: uuid.UUID
    source_id: uuid.UUID
    artifact_type: str
    detected_path: str
    upstream_url: str
    detected_version_sha: str
    detected_at: dt.datetime
    confidence_score: float
    status: str
    imported_at: dt.datetime | None
    imported_version_sha: str | None
    name: str
    description: str | None
    tags: list[str]
    excluded_at: dt.datetime | None
    excluded_reason: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_read_models_are_built_from_row_attributes() -> None:
    source_row = SourceRow(
        id=uuid.uuid4(),
        project_id=PROJECT_ID,
        repo_url="https://github.com/Acme/Tools",
        branch_or_ref="HEAD",
        root_hint=None,
        manual_map={"skill": ["skills/a"]},
        last_sync=None,
        last_error=None,
        trust_level="signed",
        visibility="public",
        created_at=NOW,
        updated_at=NOW,
    )
    source = SourceRead.model_validate(source_row)
    assert source.id == source_row.id
    assert source.manual_map == {"skill": ["skills/a"]}
    assert source.trust_level is TrustLevel.SIGNED
    assert source.visibility is Visibility.PUBLIC

    entry_row = EntryRow(
        id=uuid.uuid4(),
        source_id=source_row.id,
        artifact_type="mcp",
        detected_path="servers/x",
        upstream_url="https://github.com/Acme/Tools/tree/HEAD/servers/x",
        detected_version_sha="abc",
        detected_at=NOW,
        confidence_score=42.5,
        status="updated",
        imported_at=None,
        imported_version_sha=None,
        name="x",
        description=None,
        tags=["mcp"],
        excluded_at=None,
        excluded_reason=None,
        created_at=NOW,
        updated_at=NOW,
    )
    entry = CatalogEntryRead.model_validate(entry_row)
    assert entry.artifact_type is ArtifactType.MCP
    assert entry.status is CatalogStatus.UPDATED
    assert entry.confidence_score == 42.5
    assert entry.detected_at == NOW


def test_read_model_fields_match_the_orm_columns() -> None:
    from skillmeat.core.models.marketplace import MarketplaceCatalogEntry, MarketplaceSource
    from skillmeat.core.models.scans import MarketplaceScan
    from skillmeat.core.schemas.scans import ScanRead

    # The latest scan's state and due time come from a lateral join, not a column.
    latest_scan = {"scan_state", "next_scan_at"}
    # has_token is an EXISTS on marketplace_source_tokens: never the token itself.
    computed = {*latest_scan, "has_token"}
    assert set(SourceRead.model_fields) - computed == set(
        MarketplaceSource.__table__.columns.keys()
    )
    # The lease token is the worker's secret: never in a read model.
    assert set(ScanRead.model_fields) == set(MarketplaceScan.__mapper__.columns.keys()) - {
        "lease_token"
    }
    # search_vector is the generated search document: never part of the read model
    assert set(CatalogEntryRead.model_fields) == set(
        MarketplaceCatalogEntry.__table__.columns.keys()
    ) - {"search_vector"}
