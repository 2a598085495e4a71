"""Is the LISTEN connection alive? A self-NOTIFY round trip, since TCP cannot always tell.

A connection that a stalled NAT, proxy or load balancer stops forwarding while keeping both
sockets open looks healthy to the kernel: keepalive probes are answered by the middlebox, and
an idle LISTEN connection sends nothing that could fail. Notifications simply stop, and every
job waits for the next poll. So the worker sends itself a notification every INTERVAL seconds
(on the work connection, to a channel only its LISTEN connection listens to) and expects it
back on the LISTEN connection within TIMEOUT seconds; when it does not come, the connection is
taken for dead: logged (`listen_connection_dead`) and reconnected. Worst case, a silent LISTEN
connection is noticed INTERVAL + TIMEOUT (20 s) after it went silent; a worker with a lease
under 30 s checks as often as it heartbeats (every third of the lease) and waits at least
MIN_TIMEOUT (5 s) for each probe.
"""

from __future__ import annotations

import secrets

#: Seconds between two probes.
INTERVAL = 10.0
#: Seconds a probe may take to come back before the LISTEN connection is taken for dead.
TIMEOUT = 10.0
#: The shortest such wait, however often the worker checks: a busy server or machine can
#: delay a notification by a second or two, and a false alarm costs a reconnect.
MIN_TIMEOUT = 5.0


class ListenProbe:
    """The probe's state on a clock of the caller's (monotonic seconds)."""

    def __init__(self, now: float, interval: float = INTERVAL, timeout: float = TIMEOUT) -> None:
        #: The private channel: the LISTEN connection listens to it, the work connection
        #: notifies it.
        self.channel = f"pgdyno_probe_{secrets.token_hex(6)}"
        self.interval, self.timeout = interval, timeout
        self._next = now + interval
        self._sent_at: float | None = None
        self._token = ""
        self._count = 0

    def due(self, now: float) -> str | None:
        """The payload of a probe to send now, or None when none is due (or one is out)."""
        if self._sent_at is not None or now < self._next:
            return None
        self._count += 1
        self._token = f"{self._count}"
        self._sent_at = now
        return self._token

    def arrived(self, payload: str, now: float) -> None:
        """A notification on the probe channel came back."""
        if self._sent_at is not None and payload == self._token:
            self._sent_at = None
            self._next = now + self.interval

    def silent_for(self, now: float) -> float | None:
        """Seconds the last probe has been out, when past TIMEOUT (the connection is dead);
        None while it is healthy."""
        if self._sent_at is None or now - self._sent_at < self.timeout:
            return None
        return now - self._sent_at

    def wake_in(self, now: float) -> float:
        """Seconds until the probe needs the loop again (to send one, or to give up on one)."""
        at = self._next if self._sent_at is None else self._sent_at + self.timeout
        return max(0.0, at - now)
