"""Input limits an operator may tune, read from the environment (SKILLMEAT_*)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MAX_SCAN_ARTIFACTS = 100_000


class InputLimits(BaseSettings):
    """How much one call may carry; `SKILLMEAT_MAX_SCAN_ARTIFACTS` overrides the default.

    Read on each call (not cached), so a changed environment applies without a restart.
    """

    model_config = SettingsConfigDict(env_prefix="SKILLMEAT_", extra="ignore")

    # Artifacts in one sync_catalog call: the batch is held in memory and staged at once.
    max_scan_artifacts: int = Field(default=DEFAULT_MAX_SCAN_ARTIFACTS, ge=1)
