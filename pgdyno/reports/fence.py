"""The fence around the `http` report store: which URLs it may upload to, over which addresses.

Any client that can enqueue picks a report job's args, so the URL of an http upload is hostile
until proven otherwise: it could send a report to any host, to anyone's bucket on a shared
object-store host, or reach services inside the network (a metadata endpoint, the local platform
API, a database's HTTP port). The operator lists where reports may go in
PGDYNO_REPORTS_HTTP_ALLOW (comma-separated):

    https://storage.googleapis.com/my-bucket/       URLs under that scheme, host, port and path
    https://my-bucket.s3.amazonaws.com/reports/     (whole segments: not /my-bucket-evil/)
    uploads.example.com                             any URL on that host
    *.example.com                                   any URL on its subdomains (not the name itself)
    203.0.113.7, 10.1.2.0/24                        an address or a network, named in the URL as an
                                                    IP literal

A host entry admits every path on the host: on a host shared by many owners' buckets
(storage.googleapis.com, s3.amazonaws.com and *.s3.amazonaws.com, *.blob.core.windows.net)
anyone who can enqueue could send any report to a bucket of their own; a URL prefix entry
admits one bucket (or folder). URLs are read as the HTTP client sends them (upload_url.py):
one that could be read two ways (dot segments, encoded slashes, a backslash) is refused, never
normalised into a prefix.

Empty, the default: the http store is off. A URL passes when an entry admits it; the addresses
its host resolves to, and the address the upload actually connects to (checked on the socket,
so a DNS answer that changes between the two cannot slip through), must be public (global
unicast) unless an address or network entry covers them, or the URL prefix entry the URL is
under names that IP address: loopback, private, link-local (169.254.x.x, cloud metadata),
shared and reserved ranges are refused otherwise. No redirect is followed, no proxy from the
environment is used.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgdyno.errors import ConfigError
from pgdyno.reports.upload_url import Location, UrlRefused, read

if TYPE_CHECKING:
    import requests

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Object-store hosts that serve many owners' buckets by path (path-style S3 and GCS URLs).
_SHARED_NAMES = re.compile(
    r"(s3([.-][a-z0-9-]+)*\.amazonaws\.com(\.cn)?|storage\.googleapis\.com"
    r"|storage\.cloud\.google\.com)\Z"
)
#: Domains whose subdomains are many owners' buckets or storage accounts.
_SHARED_DOMAINS = (
    "amazonaws.com",
    "amazonaws.com.cn",
    "googleapis.com",
    "windows.net",
    "cloudflarestorage.com",
    "digitaloceanspaces.com",
    "backblazeb2.com",
    "wasabisys.com",
)


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
    """PGDYNO_REPORTS_HTTP_ALLOW, parsed: URL prefixes, host names, *.suffixes, addresses and
    networks."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()
    prefixes: tuple[Location, ...] = ()

    @classmethod
    def parse(cls, text: str, source: str = "PGDYNO_REPORTS_HTTP_ALLOW") -> HttpAllow:
        """Read the comma-separated entries; ConfigError naming a bad one."""
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[Network] = []
        prefixes: list[Location] = []
        for raw in text.split(","):
            if "://" in raw:
                prefixes.append(_prefix(raw.strip(), source))
                continue
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
                    f"{source}: {raw.strip()!r} is not a URL prefix "
                    "(https://storage.googleapis.com/my-bucket/), a host name "
                    "(uploads.example.com), a *.subdomain pattern, an IP address or a network "
                    "(10.0.0.0/8)"
                )
            if entry.startswith("*."):
                suffixes.append("." + label)
            else:
                names.add(label)
        return cls(frozenset(names), tuple(suffixes), tuple(networks), tuple(prefixes))

    @property
    def empty(self) -> bool:
        return not (self.names or self.suffixes or self.networks or self.prefixes)

    @property
    def shared_hosts(self) -> tuple[str, ...]:
        """The host entries that admit a host serving many owners' buckets (`*.s3.amazonaws.com`,
        `storage.googleapis.com`, ...): anyone who can enqueue may upload to a bucket of their
        own there. Known object stores only; sorted."""
        names = [name for name in self.names if _SHARED_NAMES.match(name)]
        suffixes = [
            "*" + suffix
            for suffix in self.suffixes
            if any(
                suffix == f".{domain}" or suffix.endswith(f".{domain}")
                for domain in _SHARED_DOMAINS
            )
        ]
        return tuple(sorted(names + suffixes))

    def host_allowed(self, host: str) -> bool:
        """Whether a host entry (name, *.suffix, address or network) admits every URL on `host`
        (a name, or an IP literal). URL prefix entries admit no whole host."""
        address = _address(host)
        if address is not None:
            return any(address in network for network in self.networks)
        name = host.lower().rstrip(".")
        return name in self.names or any(name.endswith(suffix) for suffix in self.suffixes)

    def for_upload(self, url: str) -> HttpAllow:
        """The fence for one upload to `url`: this one, where the URL prefix entry `url` is
        under names an IP address, with that address admitted too (the upload connects to it
        and nowhere else). UrlRefused, with a message for the job's author, when the URL cannot
        be read one way only or no entry admits it."""
        try:
            where = read(url)
        except UrlRefused as exc:
            raise UrlRefused(f"store http refuses the url: {exc}") from None
        if self.host_allowed(where.host):
            return self
        for prefix in self.prefixes:
            if where.under(prefix):
                address = _address(prefix.host)
                if address is None:
                    return self
                admitted = ipaddress.ip_network(address)
                return dataclasses.replace(self, networks=(*self.networks, admitted))
        if any(prefix.host == where.host for prefix in self.prefixes):
            raise UrlRefused(
                f"store http may not upload to {where.shown()!r}: it is not under a URL prefix "
                "in the worker's PGDYNO_REPORTS_HTTP_ALLOW"
            )
        raise UrlRefused(
            f"store http may not upload to {where.host[:100]!r}: the host is not in the "
            "worker's PGDYNO_REPORTS_HTTP_ALLOW"
        )

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


def _prefix(entry: str, source: str) -> Location:
    if "*" in entry:
        raise ConfigError(f"{source}: {entry!r}: a URL prefix names one host, without *")
    try:
        prefix = read(entry, prefix=True)
    except UrlRefused as exc:
        raise ConfigError(f"{source}: {entry!r} is not a URL prefix: {exc}") from None
    if entry.partition("://")[2].find("/") < 0:
        raise ConfigError(
            f"{source}: {entry!r} has no path: end it with / for every path on the host, or "
            "name the bucket or folder reports go to (https://storage.googleapis.com/my-bucket/)"
        )
    return prefix


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
