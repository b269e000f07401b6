"""Detected-artifact snapshots of real public repositories, bundled for `skillmeat-db demo`.

Files are gzip JSON lines named `<owner>__<repo>__<old|new>.jsonl.gz`, one
detected artifact per line.
"""

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from skillmeat.core.schemas.marketplace import DetectedArtifact, validate_artifacts

BUNDLED = Path(__file__).resolve().parent
ARTIFACT_FIELDS = (
    "artifact_type",
    "detected_path",
    "upstream_url",
    "detected_version_sha",
    "confidence_score",
)


@dataclass(frozen=True)
class Snapshot:
    repo_url: str
    commit: str
    artifacts: list[DetectedArtifact]


def load_snapshot(path: Path) -> Snapshot:
    """Read and validate one snapshot file (an empty file is a repository with no artifacts)."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines if line.strip()]
    artifacts = validate_artifacts({k: r[k] for k in ARTIFACT_FIELDS} for r in records)
    repo_url = records[0]["repo_url"] if records else ""
    commit = records[0]["commit"] if records else ""
    return Snapshot(repo_url=repo_url, commit=commit, artifacts=artifacts)


def snapshot_pairs(folder: Path = BUNDLED) -> dict[str, tuple[Path, Path]]:
    """`owner/repo` -> (old file, new file) for every pair in the folder."""
    pairs: dict[str, tuple[Path, Path]] = {}
    for old in sorted(folder.glob("*__old.jsonl.gz")):
        new = old.with_name(old.name.replace("__old.", "__new."))
        if new.exists():
            owner, repo = old.name.split("__")[:2]
            pairs[f"{owner}/{repo}"] = (old, new)
    return pairs
