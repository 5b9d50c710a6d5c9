from __future__ import annotations

from cqrs_shared.settings import CommonSettings


class ProjectorSettings(CommonSettings):
    pass
