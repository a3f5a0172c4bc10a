"""The authorisation rules gRPC servicers use (REST handlers declare theirs per route)."""

from __future__ import annotations

import pytest

from server.domain.errors import PermissionDenied, Unauthenticated
from server.domain.principal import Principal
from server.services import permissions

CUSTOMER = Principal(1, "customer")
ADMIN = Principal(3, "admin")
SERVICE = Principal(4, "service")


def test_require_authenticated() -> None:
    assert permissions.require_authenticated(CUSTOMER) is CUSTOMER
    with pytest.raises(Unauthenticated):
        permissions.require_authenticated(None)


def test_require_admin_and_role() -> None:
    assert permissions.require_admin(ADMIN) is ADMIN
    assert permissions.require_role(SERVICE, "admin", "service") is SERVICE
    for caller in (CUSTOMER, SERVICE):
        with pytest.raises(PermissionDenied):
            permissions.require_admin(caller)
    with pytest.raises(PermissionDenied):
        permissions.require_role(CUSTOMER, "admin", "service")
    with pytest.raises(Unauthenticated):
        permissions.require_role(None, "admin")
