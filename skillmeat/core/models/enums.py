"""Value sets of the marketplace tables.

Stored as text constrained by a CHECK listing the values (not native PostgreSQL
enums): text comparisons are LEAKPROOF, so under row-level security a filter on
these columns can still be an index condition (see docs/schema.md).
"""

from enum import StrEnum


class MemberRole(StrEnum):
    """A member's role in a project; each role includes the ones before it."""

    VIEWER = "viewer"
    EDITOR = "editor"
    OWNER = "owner"


class TrustLevel(StrEnum):
    SIGNED = "signed"
    UNSIGNED = "unsigned"


class Visibility(StrEnum):
    """Visibility of the GitHub repository behind a source."""

    PRIVATE = "private"
    PUBLIC = "public"


class ArtifactType(StrEnum):
    SKILL = "skill"
    AGENT = "agent"
    COMMAND = "command"
    MCP = "mcp"
    PLUGIN = "plugin"
    HOOK = "hook"
    BUNDLE = "bundle"


class CatalogStatus(StrEnum):
    NEW = "new"
    UPDATED = "updated"
    REMOVED = "removed"
    UNCHANGED = "unchanged"


class ScanState(StrEnum):
    """Where a scan is in its lifecycle (docs/scans.md has the state diagram)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
