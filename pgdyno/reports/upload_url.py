"""An http report store URL read the way the HTTP client will send it, for the fence.

The fence (fence.py) matches an upload URL's scheme, host, port and path against the operator's
entries, so what it matches must be what requests and urllib3 send, and what the object store
reads. A URL that could be read two ways is refused (UrlRefused, with the reason) rather than
guessed at:

- characters outside RFC 3986, or a `%` not followed by two hex digits. A backslash ends the
  host for urllib3 but not for urllib.parse: `https://evil.example\\@my-bucket.example/` connects
  to evil.example;
- user info (`user:password@`): requests would send it as an Authorization header, which a job
  may not set, and a presigned URL carries its credentials in its signature;
- a host or port urllib.parse and urllib3 disagree on;
- a path segment that is `.` or `..` (before a `;`), or that holds `/`, `\\` or a control
  character, once percent-decoded, decoding again while that changes it (for servers that decode
  twice). requests resolves a `..` (`/my-bucket/../other-bucket/x` is sent as
  `/other-bucket/x`) and decodes `%2e` to `.` (`/my-bucket/%2e%2e/other-bucket/x` is sent as
  `/my-bucket/../other-bucket/x`, which servers and proxies resolve); servers differ on whether
  `%2F` separates segments.

Such a URL has nothing left to normalise: its path segments, percent-decoded once (as the server
decodes them), are what a prefix is compared with, whole segment by whole segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+\Z")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: Rounds of percent-decoding a path segment is checked through (`%25252e` is three).
_DECODE_ROUNDS = 4


class UrlRefused(ValueError):
    """A URL the fence will not read (its message says why, in words a job's author can act
    on, and quotes none of the URL)."""


@dataclass(frozen=True)
class Location:
    """Where a URL points, as the HTTP client and the server read it."""

    scheme: str  # "http" or "https"
    host: str  # lower-case, without a trailing dot; an IPv6 literal without its brackets
    port: int  # the scheme's default port when the URL names none
    #: The path's segments, each percent-decoded once: "/a/b%20c" -> (b"a", b"b c"), "/" -> (b"",).
    segments: tuple[bytes, ...]

    def under(self, prefix: Location) -> bool:
        """Whether this URL names an object under `prefix` (read with `prefix=True`): the same
        scheme, host and port, the prefix's segments whole (`/my-bucket` is not a prefix of
        `/my-bucket-evil/x`), then at least one more, the last one not empty."""
        size = len(prefix.segments)
        return (
            (self.scheme, self.host, self.port) == (prefix.scheme, prefix.host, prefix.port)
            and self.segments[:size] == prefix.segments
            and len(self.segments) > size
            and self.segments[-1] != b""
        )

    def shown(self) -> str:
        """scheme://host[:port]/path, at most 200 characters (for an error message)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        path = "/".join(segment.decode("utf-8", "replace") for segment in self.segments)
        return f"{self.scheme}://{host}{port}/{path}"[:200]


def read(url: str, *, prefix: bool = False) -> Location:
    """The Location of an upload URL (a query string and fragment are allowed and ignored), or
    of an allowlist entry when `prefix` (no query, fragment or user info; a trailing `/` is
    dropped: `/my-bucket/` and `/my-bucket` are the same prefix). UrlRefused otherwise."""
    if not _URL_CHARS.match(url) or _BAD_PERCENT.search(url):
        raise UrlRefused(
            "it holds characters a URL may not (spaces, backslashes, quotes, non-ASCII) or a "
            "'%' not followed by two hex digits: percent-encode them"
        )
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    try:
        sent = parse_url(url)  # how requests and urllib3 read it: the host they connect to
        split = urlsplit(url)
        split_port = split.port
    except (LocationParseError, ValueError):
        raise UrlRefused("it is not a URL requests can send (check its host and port)") from None
    scheme = (sent.scheme or "").lower()
    if scheme not in DEFAULT_PORTS:
        raise UrlRefused("it is not an http:// or https:// URL")
    if split.username is not None or sent.auth is not None:
        raise UrlRefused("it holds a user name or password (user:password@host)")
    host = (sent.host or "").strip("[]").rstrip(".")
    if not host or host != (split.hostname or "").rstrip(".") or sent.port != split_port:
        raise UrlRefused("its host could be read two ways")
    path = split.path or "/"
    if prefix and ("?" in url or "#" in url):
        raise UrlRefused("a prefix has no query string or fragment")
    raw_segments = path.split("/")[1:]
    if any(_unsafe(segment) for segment in raw_segments):
        raise UrlRefused(
            "its path holds a '.' or '..' segment, or an encoded '/', '\\' or control "
            "character: give the URL as the object store signed it"
        )
    segments = tuple(unquote_to_bytes(segment) for segment in raw_segments)
    if prefix and segments and segments[-1] == b"":
        segments = segments[:-1]
    return Location(scheme, host, sent.port or DEFAULT_PORTS[scheme], segments)


def _unsafe(segment: str) -> bool:
    """Whether a raw path segment could leave its place in the path on some server."""
    text = segment
    for _ in range(_DECODE_ROUNDS):
        if text.split(";")[0] in (".", "..") or any(
            char in "/\\" or ord(char) < 0x20 or ord(char) == 0x7F for char in text
        ):
            return True
        decoded = unquote(text, encoding="latin-1")  # one character per byte: nothing hidden
        if decoded == text:
            return False
        text = decoded
    return True  # still decoding after that many rounds: no real object name looks like this
