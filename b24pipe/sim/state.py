"""The simulator's whole state: portals by member id and domain, the token book, the sender."""

from __future__ import annotations

from dataclasses import dataclass, field

from b24pipe.sim.events import EventSender, Outgoing
from b24pipe.sim.oauth import TokenBook
from b24pipe.sim.portal import Portal


@dataclass
class Simulator:
    base_url: str
    client_id: str
    client_secret: str
    token_ttl: int
    portals: dict[str, Portal] = field(default_factory=dict)
    domains: dict[str, Portal] = field(default_factory=dict)  # current and former domains
    tokens: TokenBook = field(default_factory=TokenBook)
    sender: EventSender = field(default_factory=EventSender)
    frames: dict[str, Outgoing] = field(default_factory=dict)  # install pages a browser is to load

    def add_portal(self, portal: Portal) -> None:
        self.portals[portal.member_id] = portal
        self.domains[portal.domain] = portal

    def rename(self, portal: Portal, domain: str) -> None:
        portal.old_domains.append(portal.domain)
        portal.domain = domain
        self.domains[domain] = portal

    def reset(self) -> None:
        self.portals.clear()
        self.domains.clear()
        self.frames.clear()
        self.tokens = TokenBook()
