"""Remembering: HTTP caching rules (RFC 9111), coalescing, stores, replication hooks."""
