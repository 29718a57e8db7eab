"""Knowing: message types and the one codec, membership and failure detection, sockets, discovery."""
