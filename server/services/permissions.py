"""Authorisation rules over a `Principal`, used by the gRPC servicers (server/rpc/auth.py); REST
handlers declare `access` per route and check through ApiHandler.require_role.

Each rule is a plain function that returns normally or raises a domain error, which each edge
maps once (401 / 403, UNAUTHENTICATED / PERMISSION_DENIED).
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
