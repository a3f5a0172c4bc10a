"""The reusable authorisation rules, the same for REST and gRPC."""

from __future__ import annotations

import pytest

from server.services import permissions
from server.services.errors import NotFound, PermissionDenied, Unauthenticated
from server.services.principal import Principal

CUSTOMER = Principal(1, "customer")
OTHER = Principal(2, "customer")
ADMIN = Principal(3, "admin")
SERVICE = Principal(4, "service")


def test_require_authenticated() -> None:
    assert permissions.require_authenticated(CUSTOMER) is CUSTOMER
    with pytest.raises(Unauthenticated):
        permissions.require_authenticated(None)


def test_require_admin_and_staff() -> None:
    assert permissions.require_admin(ADMIN) is ADMIN
    assert permissions.require_staff(SERVICE) is SERVICE
    assert permissions.require_staff(ADMIN) is ADMIN
    refused = (
        (CUSTOMER, permissions.require_admin),
        (SERVICE, permissions.require_admin),
        (CUSTOMER, permissions.require_staff),
    )
    for caller, rule in refused:
        with pytest.raises(PermissionDenied):
            rule(caller)
    with pytest.raises(Unauthenticated):
        permissions.require_staff(None)


def test_owner_or_admin_hides_other_peoples_objects() -> None:
    assert permissions.require_owner_or_admin(CUSTOMER, owner_id=1) is CUSTOMER
    assert permissions.require_owner_or_admin(ADMIN, owner_id=1) is ADMIN
    with pytest.raises(NotFound):
        permissions.require_owner_or_admin(OTHER, owner_id=1, what="order")
    with pytest.raises(NotFound):
        permissions.require_owner_or_admin(SERVICE, owner_id=1)
    with pytest.raises(Unauthenticated):
        permissions.require_owner_or_admin(None, owner_id=1)


def test_admin_or_read_only() -> None:
    assert permissions.require_admin_or_read_only(None, write=False) is None
    assert permissions.require_admin_or_read_only(CUSTOMER, write=False) is CUSTOMER
    assert permissions.require_admin_or_read_only(ADMIN, write=True) is ADMIN
    with pytest.raises(PermissionDenied):
        permissions.require_admin_or_read_only(CUSTOMER, write=True)
    with pytest.raises(Unauthenticated):
        permissions.require_admin_or_read_only(None, write=True)


def test_authenticated_for_write() -> None:
    assert permissions.require_authenticated_for_write(None, write=False) is None
    assert permissions.require_authenticated_for_write(CUSTOMER, write=True) is CUSTOMER
    with pytest.raises(Unauthenticated):
        permissions.require_authenticated_for_write(None, write=True)


def test_only_admins_see_inactive_products() -> None:
    assert permissions.can_see_inactive(ADMIN)
    assert not permissions.can_see_inactive(CUSTOMER)
    assert not permissions.can_see_inactive(SERVICE)
    assert not permissions.can_see_inactive(None)
