"""The worker side: the Python API (`sdk.Worker`) and adapters that turn an HTTP
backend (`upstream`) or a WSGI app (`wsgi`) into a worker handler."""

from node.worker.sdk import Handler, Worker

__all__ = ["Handler", "Worker"]
