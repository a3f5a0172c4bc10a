"""Domain errors, raised by services and repositories; each edge (HTTP, gRPC) translates them
once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str
    # Machine-readable facts about the failure, sent beside `field` and `message` (a short stock
    # line carries product_id, requested and available), so a client need not parse the message.
    facts: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def as_problem(self) -> dict[str, Any]:
        """The entry of a problem document's `errors` list."""
        return {"field": self.field, "message": self.message, **self.facts}

    @classmethod
    def from_problem(cls, entry: Mapping[str, Any]) -> FieldError:
        facts = {k: v for k, v in entry.items() if k not in ("field", "message")}
        return cls(entry["field"], entry["message"], facts)


class DomainError(Exception):
    """Base of every error a service may raise on purpose."""

    title = "Error"

    def __init__(self, detail: str = "", *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors or []


class BadRequest(DomainError):
    title = "Bad Request"


class Unauthenticated(DomainError):
    title = "Unauthorized"


class PermissionDenied(DomainError):
    title = "Forbidden"


class NotFound(DomainError):
    title = "Not Found"


class Conflict(DomainError):
    title = "Conflict"


class AlreadyExists(Conflict):
    title = "Conflict"


class ValidationFailed(DomainError):
    title = "Unprocessable Entity"


class RateLimited(DomainError):
    title = "Too Many Requests"

    def __init__(self, detail: str = "rate limit exceeded", *, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(DomainError):
    title = "Service Unavailable"

    def __init__(self, detail: str = "", *, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


# What either edge answers when PostgreSQL cannot be reached (server.db.pool.database_unavailable).
DATABASE_UNAVAILABLE = Unavailable(
    "the database is briefly unavailable; retry shortly (a checkout with the same Idempotency-Key)",
    retry_after=2,
)
