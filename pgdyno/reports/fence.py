"""The fence around the `http` report store: which hosts it may upload to, over which addresses.

Any client that can enqueue picks a report job's args, so the URL of an http upload is hostile
until proven otherwise: it could send a report to any host, or reach services inside the
network (a metadata endpoint, the local platform API, a database's HTTP port). The operator
lists the hosts reports may go to in PGDYNO_REPORTS_HTTP_ALLOW (comma-separated):

    bucket.s3.amazonaws.com     that host
    *.s3.amazonaws.com          its subdomains (not the name itself)
    203.0.113.7, 10.1.2.0/24    an address or a network, named in the URL as an IP literal

Empty, the default: the http store is off. A host passes when the URL names it; the addresses
it resolves to, and the address the upload actually connects to (checked on the socket, so a
DNS answer that changes between the two cannot slip through), must be public (global unicast)
unless an address or network entry covers them: loopback, private, link-local (169.254.x.x,
cloud metadata), shared and reserved ranges are refused otherwise. No redirect is followed, no
proxy from the environment is used.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgdyno.errors import ConfigError

if TYPE_CHECKING:
    import requests

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressRefused(Exception):
    """The upload would connect to an address the fence does not admit (never an OSError, so
    urllib3 neither retries it nor words it as a connection failure)."""


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class HttpAllow:
    """PGDYNO_REPORTS_HTTP_ALLOW, parsed: host names, *.suffixes, addresses and networks."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str, source: str = "PGDYNO_REPORTS_HTTP_ALLOW") -> HttpAllow:
        """Read the comma-separated entries; ConfigError naming a bad one."""
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[Network] = []
        for raw in text.split(","):
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            label = entry.removeprefix("*.")
            if not label or "/" in label or ":" in label or "*" in label or " " in label:
                raise ConfigError(
                    f"{source}: {raw.strip()!r} is not a host name (bucket.example.com), a "
                    "*.subdomain pattern, an IP address or a network (10.0.0.0/8)"
                )
            if entry.startswith("*."):
                suffixes.append("." + label)
            else:
                names.add(label)
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    @property
    def empty(self) -> bool:
        return not (self.names or self.suffixes or self.networks)

    def host_allowed(self, host: str) -> bool:
        """Whether a URL may name `host` (a name, or an IP literal)."""
        address = _address(host)
        if address is not None:
            return any(address in network for network in self.networks)
        name = host.lower().rstrip(".")
        return name in self.names or any(name.endswith(suffix) for suffix in self.suffixes)

    def address_allowed(self, text: str) -> bool:
        """Whether the upload may connect to address `text`: a public (global unicast) one,
        or one an address or network entry covers."""
        address = _address(text)
        if address is None:
            return False
        if any(address in network for network in self.networks):
            return True
        return address.is_global and not address.is_multicast

    def check_resolves(self, host: str, port: int) -> None:
        """AddressRefused unless every address `host` resolves to is allowed (checked before
        connecting, so a name pointing inside the network is not even dialled)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return  # the connection attempt reports it
        for *_, sockaddr in infos:
            if not self.address_allowed(str(sockaddr[0])):
                raise AddressRefused(f"{host} resolves to an address reports may not upload to")


def _checked(sock: socket.socket, allow: HttpAllow, host: str) -> socket.socket:
    peer = sock.getpeername()[0]
    if not allow.address_allowed(str(peer)):
        sock.close()
        raise AddressRefused(f"{host} connected to an address reports may not upload to")
    return sock


def session(allow: HttpAllow) -> requests.Session:
    """A requests session whose every connection is checked against `allow` once open, that
    ignores proxy settings of the environment and never retries. (requests is imported here:
    only workers that upload pay for it.)"""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class FencedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            allow.check_resolves(self._dns_host, self.port)
            return _checked(super()._new_conn(), allow, self._dns_host)

    class FencedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            allow.check_resolves(self._dns_host, self.port)
            return _checked(super()._new_conn(), allow, self._dns_host)

    class FencedHTTPPool(HTTPConnectionPool):
        ConnectionCls = FencedHTTPConnection

    class FencedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = FencedHTTPSConnection

    class FencedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {
                "http": FencedHTTPPool,
                "https": FencedHTTPSPool,
            }

    fenced = requests.Session()
    fenced.trust_env = False  # no HTTP(S)_PROXY: the fence checks the address it connects to
    fenced.mount("http://", FencedAdapter(max_retries=0))
    fenced.mount("https://", FencedAdapter(max_retries=0))
    return fenced
