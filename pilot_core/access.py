"""Who may do what: roles, actions, and which demonstrations a caller can see.

Demonstrations belong to the organisation that created them (a startup) and are
shared with participant organisations (the factory that hosts the line, the
evaluating body). A caller sees a demonstration if they are an admin, or their
organisation owns it or takes part in it, and their key is not scoped to
another one. What they may do with it is decided by their role alone.

Anything a caller cannot see is answered as if it did not exist, so that one
tenant never learns of another's demonstrations.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple


class Role(enum.StrEnum):
    STARTUP = "startup"  # instruments the line and runs its own demonstrations
    FACTORY_MANAGER = "factory_manager"  # checks the gains on the line it hosts
    EVALUATOR = "evaluator"  # verifies results; freezes plans, never alters them
    ADMIN = "admin"  # operates the deployment: organisations, keys, everything


class Action(enum.StrEnum):
    READ = "read"  # a demonstration, its plan versions, KPIs, comparison, participants and audit trail
    CREATE = "create"  # a demonstration
    REPLACE_DRAFT = "replace_draft"
    FREEZE = "freeze"
    AMEND = "amend"
    MANAGE_PARTICIPANTS = "manage_participants"
    ADMINISTER = "administer"  # organisations, API keys, the deployment's whole audit log


PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.STARTUP: frozenset(
        {Action.READ, Action.CREATE, Action.REPLACE_DRAFT, Action.FREEZE, Action.AMEND, Action.MANAGE_PARTICIPANTS}
    ),
    Role.FACTORY_MANAGER: frozenset({Action.READ}),
    Role.EVALUATOR: frozenset({Action.READ, Action.FREEZE}),
    Role.ADMIN: frozenset(Action),
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change, as the audit trail records it."""

    name: str
    role: Role | None = None  # None: a command run on the server itself, not through the API
    organisation: str | None = None
    key_id: str | None = None

    @classmethod
    def system(cls, name: str) -> Actor:
        """A change made by a command on the server, e.g. ``pilot demo`` or ``pilot keys create``."""
        return cls(name)


class Membership(NamedTuple):
    """Who a demonstration belongs to and who takes part in it."""

    demonstration_id: int
    owner: str | None  # organisation slug; None: an admin's, for no organisation in particular
    participants: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller of the API."""

    key_id: str
    name: str
    role: Role
    organisation: str  # slug
    demonstration_id: int | None = None  # a key may be limited to one demonstration

    @property
    def actor(self) -> Actor:
        return Actor(self.name, self.role, self.organisation, self.key_id)

    def sees(self, demonstration: Membership) -> bool:
        if self.demonstration_id is not None and self.demonstration_id != demonstration.demonstration_id:
            return False
        if self.role is Role.ADMIN:
            return True
        return self.organisation == demonstration.owner or self.organisation in demonstration.participants

    def may(self, action: Action, demonstration: Membership | None = None) -> bool:
        """Whether the role allows ``action``, on ``demonstration`` if it concerns one.

        A startup changes only what its organisation owns; taking part in another's
        demonstration lets it read. A key limited to one demonstration creates nothing.
        """
        if action not in PERMISSIONS[self.role]:
            return False
        if demonstration is None:
            return not (action is Action.CREATE and self.demonstration_id is not None)
        if not self.sees(demonstration):
            return False
        if self.role is Role.STARTUP and action is not Action.READ:
            return self.organisation == demonstration.owner
        return True
