"""Which opens and clicks a machine made (issue 21 item 5; docs/engagement.md, "Machine
opens and clicks"). Pure: the times, the user agent and the peer address are passed in.

The split between what people did and what machines did lives here, once: HUMAN is
what reports, the A/B winner, sunset and the send hour count; MACHINE names the kind a
machine's open or click is stored as instead.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

OPEN, CLICK = "open", "click"
MACHINE_OPEN, MACHINE_CLICK = "machine_open", "machine_click"
MACHINE = {OPEN: MACHINE_OPEN, CLICK: MACHINE_CLICK}  # the kind a machine's hit is stored as
HUMAN = frozenset({OPEN, CLICK})  # the only opens and clicks anything counts
CLICKS = (CLICK, MACHINE_CLICK)  # a mail's clicks, whoever made them (the burst rule)

TOO_SOON = timedelta(seconds=10)  # after delivery: a filter or a scanner, not a reader
BURST = timedelta(seconds=2)  # every link of a mail within this: a link scanner
USER_AGENT_LIMIT = 512  # characters kept of a user agent


@dataclass(frozen=True)
class Proxy:
    """A known fetcher that loads a mail's images whether or not anyone reads it: a
    request from it is a machine open when its user agent is exactly AGENT (None: any)
    or, with NETWORKS, it comes from one of them."""

    name: str
    agent: str | None
    networks: tuple[str, ...] = ()


# The rule table (sources in docs/engagement.md). Apple Mail Privacy Protection fetches
# every image on delivery through Apple's relays, which send the bare "Mozilla/5.0" and
# leave from Apple's 17.0.0.0/8. Gmail's image proxy is not here: it fetches when the
# reader opens the mail.
PROXIES = (
    Proxy("Apple Mail Privacy Protection", agent="Mozilla/5.0", networks=("17.0.0.0/8",)),
)
_NETWORKS = tuple((proxy, tuple(ipaddress.ip_network(n) for n in proxy.networks))
                  for proxy in PROXIES)


def proxy_of(user_agent: str | None, ip: str | None) -> Proxy | None:
    """The known privacy proxy a request came from (by its exact user agent, or by its
    address), or None."""
    agent = (user_agent or "").strip()
    address = _address(ip)
    for proxy, networks in _NETWORKS:
        if proxy.agent is not None and agent == proxy.agent:
            return proxy
        if address is not None and any(address in network for network in networks):
            return proxy
    return None


def _address(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip) if ip else None
    except ValueError:
        return None


def kind_of(kind: str, *, at: datetime, sent_at: datetime | None,
            user_agent: str | None = None, ip: str | None = None) -> str:
    """The kind an open or a click (KIND) is stored as: MACHINE's when it came within
    TOO_SOON of delivery (SENT_AT; at or before it too) or, for an open, from a known
    privacy proxy; KIND itself otherwise. A click's burst is judged later (bursts())."""
    if kind not in MACHINE:
        return kind
    if sent_at is not None and at - sent_at < TOO_SOON:
        return MACHINE[kind]
    if kind == OPEN and proxy_of(user_agent, ip) is not None:
        return MACHINE_OPEN
    return kind


def bursts(clicks: Sequence[tuple[datetime, str]], links: int) -> set[int]:
    """The indexes of CLICKS ((when, URL) of one mail) that belong to a burst: clicks
    whose times lie within BURST of the first of them and whose distinct URLs are all
    LINKS links of the mail. A mail of fewer than two links has no bursts (one click
    on its only link is what a reader does too)."""
    if links < 2:
        return set()
    order = sorted(range(len(clicks)), key=lambda i: clicks[i][0])
    found: set[int] = set()
    end = 0
    for start, first in enumerate(order):
        end = max(end, start)
        while end + 1 < len(order) and clicks[order[end + 1]][0] - clicks[first][0] <= BURST:
            end += 1
        window = order[start:end + 1]
        if len({clicks[i][1] for i in window}) >= links:
            found.update(window)
    return found


def may_burst(clicks: Sequence[tuple[datetime, str]]) -> bool:
    """Whether CLICKS of one mail hold two distinct URLs within BURST: only then is the
    mail's link count worth finding out."""
    return bool(bursts(clicks, 2))


def ip_hash(ip: str | None, key: str) -> str | None:
    """A keyed hash of a peer address (HMAC-SHA256 under the secret key, hex): two hits
    from one address can be matched, the address cannot be read back or looked up."""
    if not ip:
        return None
    return hmac.new(key.encode(), ip.encode(), "sha256").hexdigest()


def user_agent(value: str | None) -> str | None:
    """The user agent as stored: at most USER_AGENT_LIMIT characters, none for none."""
    return value[:USER_AGENT_LIMIT] if value else None
