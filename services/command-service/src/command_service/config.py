from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from cqrs_shared.settings import CommonSettings


class CommandSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    pg_pool_min: int = 2
    pg_pool_max: int = 10
    # group commit: at most this many commands in one transaction (1: each in its own)
    command_group_max: int = 32
    relay_enabled: bool = True
    relay_batch: int = 500
    relay_poll_seconds: float = 1.0
    # Fault injection for the outbox tests: exit right after publishing, before marking published.
    relay_crash_after_publish: bool = False
