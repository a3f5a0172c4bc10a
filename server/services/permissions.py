"""The one authorisation policy of both edges: who may call an operation, by access level.

Every REST handler method and every gRPC method declares its level once (`access` tables beside
the handlers; `ACCESS` in each server/rpc module), and the edge checks it with `check_access`
before the operation runs (ApiHandler.prepare, the gRPC AuthInterceptor). Levels:

- `anyone`: no identity needed (a valid token still names the caller);
- `user`: any signed-in caller; `owner`: the same, and the service then shows or changes only
  what belongs to the caller (someone else's order is "not found", so ids leak nothing);
- `staff`: admins and service accounts; `admin`: admins only.

A refusal is a domain error each edge maps once (401 / 403, UNAUTHENTICATED / PERMISSION_DENIED).
"""

from __future__ import annotations

from server.domain.errors import PermissionDenied, Unauthenticated
from server.domain.principal import Principal


def require_authenticated(principal: Principal | None) -> Principal:
    if principal is None:
        raise Unauthenticated("authentication required")
    return principal


def require_role(principal: Principal | None, *roles: str) -> Principal:
    caller = require_authenticated(principal)
    if caller.role not in roles:
        raise PermissionDenied("this action needs the role " + " or ".join(roles))
    return caller


def require_admin(principal: Principal | None) -> Principal:
    return require_role(principal, "admin")


ACCESS_LEVELS = frozenset({"anyone", "user", "owner", "staff", "admin"})


def check_access(level: str, principal: Principal | None) -> Principal | None:
    """The caller when `level` admits it; Unauthenticated / PermissionDenied otherwise."""
    if level == "anyone":
        return principal
    if level in ("user", "owner"):
        return require_authenticated(principal)
    if level == "staff":
        return require_role(principal, "admin", "service")
    if level == "admin":
        return require_admin(principal)
    raise PermissionDenied(f"no access level {level!r} is declared for this operation")
