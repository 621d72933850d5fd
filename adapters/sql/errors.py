"""What the repositories refuse, with a title and HTTP status for RFC 9457 problem details."""

from __future__ import annotations

from typing import ClassVar


class RepositoryError(Exception):
    title: ClassVar[str] = "Storage error"
    status: ClassVar[int] = 500


class NotFound(RepositoryError):
    title = "Not found"
    status = 404


class DuplicateSlug(RepositoryError):
    title = "Slug already taken"
    status = 409


class InvalidSlug(RepositoryError):
    title = "Invalid slug"
    status = 422


class PlanFrozen(RepositoryError):
    title = "Plan is frozen"
    status = 409

    def __init__(self, version: int, plan_hash: str) -> None:
        super().__init__(f"version {version} is frozen ({plan_hash}); amend it with a reason instead")
        self.version = version
        self.plan_hash = plan_hash


class FrozenByAnother(RepositoryError):
    """Two callers froze the same draft at once (or one after the other): the first froze it, this is the other."""

    title = "Plan was frozen by someone else"
    status = 409

    def __init__(self, version: int, plan_hash: str, by: str, at: str) -> None:
        super().__init__(
            f"version {version} was frozen already, by {by} at {at} ({plan_hash}); nothing was changed:"
            " read it back, and amend it with a reason if it must change"
        )
        self.version = version
        self.plan_hash = plan_hash


class NotFrozenYet(RepositoryError):
    title = "Plan is still a draft"
    status = 409

    def __init__(self, version: int) -> None:
        super().__init__(f"version {version} is a draft; replace it in place, or freeze it before amending")
        self.version = version


class AmendmentNeedsReason(RepositoryError):
    title = "Amendment needs a reason"
    status = 422

    def __init__(self) -> None:
        super().__init__("an amendment to a frozen plan must say why it was made (a non-empty reason)")


class UnknownOrganisation(RepositoryError):
    title = "Unknown organisation"
    status = 422


class DuplicateOrganisation(RepositoryError):
    title = "Organisation already exists"
    status = 409


class OwnerIsNotAParticipant(RepositoryError):
    title = "Organisation owns the demonstration"
    status = 409


class InvalidKeyScope(RepositoryError):
    title = "Invalid key scope"
    status = 422
