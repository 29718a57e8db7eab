"""Error families of the node, each knowing the HTTP status it becomes at the edge.

Like h11's LocalProtocolError/RemoteProtocolError: the class says whose fault it
was; `status` is the answer a client gets; `reason` is a one-line explanation
that is safe to show (never a secret, never a traceback).
"""

from __future__ import annotations


class Scale0Error(Exception):
    """Base of every error the node maps to an HTTP status."""

    status = 500
    outcome = "error"  # the label logs and metrics give a request that ended here

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ClientError(Scale0Error):
    """The client sent something we will not process."""

    status = 400


class BodyTooLarge(ClientError):
    status = 413


class HeadersTooLarge(ClientError):
    status = 431


class NoRoute(Scale0Error):
    """No service matches the request and there is no `default` service."""

    status = 404


class UpstreamError(Scale0Error):
    """A worker, its upstream, or a peer failed to give a valid answer."""

    status = 502


class UpstreamTimeout(Scale0Error):
    """The answer did not come before the request's deadline."""

    status = 504


class NoCapacity(Scale0Error):
    """No worker here or at any peer could take the request before its deadline."""

    status = 503

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PeerBusy(NoCapacity):
    """A forwarded request found no spare slot here; the sender should try elsewhere."""

    outcome = "busy"


class ConfigError(Exception):
    """The operator's configuration is invalid; the message says where and why."""
