"""Settings common to every service, read from the environment (pydantic-settings)."""

from __future__ import annotations

import os
import socket

from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """URLs of the infrastructure. No credentials live in code: the defaults are the
    local development servers, which the environment overrides everywhere else."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/cqrs"
    mongo_url: str = "mongodb://127.0.0.1:27017"
    mongo_db: str = "cqrs_views"
    instance: str = f"{socket.gethostname()}-{os.getpid()}"
    prefetch: int = 64
    log_level: str = "INFO"
    # liveness, readiness and metrics over HTTP; 0 picks a free port (tests), -1 disables
    health_port: int = 8080
