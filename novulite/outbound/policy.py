"""Which network destinations outbound requests may reach.

A workflow's requests go to addresses that anyone able to edit a workflow or send a
payload can choose. They must not reach this host's loopback services, the private
network around it or a cloud metadata service, unless the operator allows that
destination in NOVULITE_OUTBOUND_ALLOW.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTING = "NOVULITE_OUTBOUND_ALLOW"
ALLOW_OPTION = "--outbound-allow"

# Instance metadata services of AWS, GCP, Azure and others (169.254.169.254), and AWS's IPv6 one.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefused(Exception):
    """A destination the policy does not allow; raised before any connection is made."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        target = host if host == address else f"{host} ({address})"
        entries = address if host == address else f"{host} or {address}"
        super().__init__(
            f"refused to connect to {target}: {reason}; to allow it, add {entries} "
            f"or a range containing {address} to {ALLOW_SETTING} ({ALLOW_OPTION})"
        )
        self.host = host
        self.address = address
        self.reason = reason


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address that an IPv4-mapped, 6to4, Teredo or NAT64 address carries."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Return why `address` is not a public destination, or None when it is one."""
    if address in METADATA_ADDRESSES:
        return "it is a cloud metadata service address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = refusal_reason(embedded)
            return None if reason is None else f"it embeds {embedded}, and {reason}"
    is_v4 = isinstance(address, ipaddress.IPv4Address)
    checks = (
        (address.is_unspecified, "it is the unspecified address"),
        (address.is_loopback, "it is a loopback address"),
        (address.is_link_local, "it is a link-local address"),
        (not is_v4 and address in _UNIQUE_LOCAL, "it is a unique-local address"),
        (is_v4 and address in _CGNAT, "it is a carrier-grade NAT address"),
        (address.is_multicast, "it is a multicast address"),
        (address.is_private, "it is a private address"),
        (not address.is_global, "it is not a public address"),
    )
    for matches, reason in checks:
        if matches:
            return reason
    return None


@dataclasses.dataclass(frozen=True)
class OutboundPolicy:
    """The destinations allowed beyond public addresses: host names, and address ranges."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    def check(self, host: str, address: IPAddress) -> None:
        """Raise OutboundRefused unless a connection to `address`, resolved from `host`, is allowed."""
        if host.lower().rstrip(".") in self.hosts:
            return
        if any(address in network for network in self.networks):
            return
        reason = refusal_reason(address)
        if reason is not None:
            raise OutboundRefused(host, str(address), reason)


def parse_allow_entries(entries: Iterable[str]) -> OutboundPolicy:
    """Build a policy from host names and CIDR ranges (a bare address is a range of one).

    Raises ValueError naming an entry that is neither.
    """
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        name = entry.lower().rstrip(".")
        labels = name.split(".")
        if "/" in name or not all(label and label.replace("-", "").isalnum() for label in labels):
            raise ValueError(
                f"{entry!r} is neither a host name nor an address range; "
                "use names such as hooks.example.com or ranges such as 10.0.0.0/8, comma-separated"
            )
        hosts.add(name)
    return OutboundPolicy(frozenset(hosts), tuple(networks))


def split_allow_setting(text: str | None) -> tuple[str, ...]:
    """Split the comma-separated allow setting into its entries, checking each one."""
    entries = tuple(entry.strip() for entry in (text or "").split(",") if entry.strip())
    parse_allow_entries(entries)
    return entries


@functools.lru_cache(maxsize=8)
def policy_for(entries: tuple[str, ...]) -> OutboundPolicy:
    """Return the policy of a checked allow setting, parsed once per process."""
    return parse_allow_entries(entries)
