"""Per-portal admission to a process's in-flight slots: one portal's storm cannot take the
slots every other portal's events need.

All events come from Bitrix24's few queue servers, so the client address says nothing
about who is flooding; the portal (`auth[member_id]`, read from the body) does. A request
takes one of the process's `B24PIPE_MAX_INFLIGHT` slots once its body is parsed. While
fewer than half of them are held, any request gets one; above that, a portal already
holding its fair share, `cap // (portals holding slots + 1)`, gets 503. The `+ 1` keeps a
share free for a portal that holds none yet: a portal flooding alone stops at half the
cap, and while others hold slots too it gets one more only below its (smaller) share. A
portal sending at a normal rate holds a slot or two at a time and is admitted until the
whole cap is taken, which the flood alone can no longer do.
"""

from __future__ import annotations

CONTENDED = 0.5  # share of the cap held above which each portal is held to its fair share


def admit(portal_held: int, total_held: int, portals_holding: int, cap: int) -> bool:
    """Whether a request of a portal holding `portal_held` slots gets one more, while the
    process holds `total_held` of its `cap` slots for `portals_holding` portals."""
    if total_held >= cap:
        return False
    if total_held < cap * CONTENDED:
        return True
    return portal_held < max(1, cap // (portals_holding + 1))


class Slots:
    """The in-flight slots of one process, counted per portal (`take` / `give_back`)."""

    __slots__ = ("cap", "held", "total")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.held: dict[str, int] = {}  # member_id -> slots held; no entry at 0
        self.total = 0

    def take(self, member_id: str) -> bool:
        held = self.held.get(member_id, 0)
        if not admit(held, self.total, len(self.held), self.cap):
            return False
        self.held[member_id] = held + 1
        self.total += 1
        return True

    def give_back(self, member_id: str) -> None:
        held = self.held[member_id] - 1
        if held:
            self.held[member_id] = held
        else:
            del self.held[member_id]
        self.total -= 1
