"""Who is calling: the identity a verified access token carries."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("customer", "admin", "service")


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_staff(self) -> bool:
        """Admins and service accounts may drive order states and stock."""
        return self.role in ("admin", "service")
