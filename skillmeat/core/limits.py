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


DEFAULT_SCAN_MAX_ATTEMPTS = 5


class ScanLimits(BaseSettings):
    """How often a scan is tried; `SKILLMEAT_SCAN_MAX_ATTEMPTS` overrides the default.

    Read on each call, like InputLimits.
    """

    model_config = SettingsConfigDict(env_prefix="SKILLMEAT_", extra="ignore")

    # Runs a scan may use (claims that failed or were reaped) before it is failed.
    scan_max_attempts: int = Field(default=DEFAULT_SCAN_MAX_ATTEMPTS, ge=1)
