"""Reusable authorisation rules over a `Principal`, shared by REST handlers and gRPC servicers.

Each rule is a plain function that returns normally or raises a domain error, which each edge
maps once (401 / 403 / 404, UNAUTHENTICATED / PERMISSION_DENIED / NOT_FOUND). Objects that
belong to someone else are reported as missing (404), so ids of other people's orders leak
nothing.
"""

from __future__ import annotations

from server.services.errors import NotFound, PermissionDenied, Unauthenticated
from server.services.principal import Principal

STAFF_ROLES = ("admin", "service")


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


def require_staff(principal: Principal | None) -> Principal:
    """Admins and service accounts (order states, stock)."""
    return require_role(principal, *STAFF_ROLES)


def require_owner_or_admin(
    principal: Principal | None, owner_id: int, what: str = "resource"
) -> Principal:
    """The owner of the object or an admin; anyone else is told it does not exist."""
    caller = require_authenticated(principal)
    if caller.user_id != owner_id and not caller.is_admin:
        raise NotFound(f"no such {what}")
    return caller


def require_admin_or_read_only(principal: Principal | None, *, write: bool) -> Principal | None:
    """Anyone may read; only admins may write."""
    if not write:
        return principal
    return require_admin(principal)


def require_authenticated_for_write(
    principal: Principal | None, *, write: bool
) -> Principal | None:
    """Anyone may read; any signed-in caller may write."""
    if not write:
        return principal
    return require_authenticated(principal)


def can_see_inactive(principal: Principal | None) -> bool:
    """Inactive products are visible to admins only."""
    return principal is not None and principal.is_admin
