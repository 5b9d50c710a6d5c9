from __future__ import annotations

from cqrs_shared.settings import CommonSettings


class ProjectorSettings(CommonSettings):
    # on start, ask the command service for the events after the watermark
    catch_up_on_start: bool = True
