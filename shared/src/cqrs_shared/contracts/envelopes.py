"""Envelopes of commands, queries, events and their replies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]

MAX_BODY_BYTES = 1024 * 1024


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    correlationId: str | None = None
    clientId: str | None = None
    roles: list[str] = Field(default_factory=list)


class CommandEnvelope(BaseModel):
    """Unknown top-level fields are ignored (forward compatibility); see docs/protocol.md."""

    model_config = ConfigDict(extra="ignore")
    commandId: Id
    commandType: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    timestamp: str | None = None
    userId: str | None = None
    expectedVersion: Annotated[StrictInt, Field(ge=0)] | None = None
    data: dict[str, Any]
    metadata: Metadata = Field(default_factory=Metadata)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)


class CommandReply(BaseModel):
    commandId: str | None
    status: Literal["accepted", "rejected"]
    aggregateId: str | None = None
    version: int | None = None
    position: int | None = None
    error: ErrorBody | None = None


class EventEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")
    eventId: str
    eventType: str
    aggregateId: str
    aggregateType: str
    version: int
    position: int
    timestamp: str
    correlationId: str | None = None
    causationId: str | None = None
    schemaVersion: int = 1
    data: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def routing_key(self) -> str:
        return f"{self.aggregateType}.{self.eventType}"


class QueryEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")
    queryId: Id
    queryType: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    parameters: dict[str, Any] = Field(default_factory=dict)
    minPosition: Annotated[StrictInt, Field(ge=0)] | None = None
    maxWaitMs: Annotated[StrictInt, Field(ge=0, le=30000)] = 5000


class QueryReply(BaseModel):
    queryId: str | None
    status: Literal["ok", "error"]
    result: Any = None
    position: int | None = None
    error: ErrorBody | None = None
