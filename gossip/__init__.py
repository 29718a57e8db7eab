"""Knowing: message types and their codec, membership, failure detection, sockets, discovery."""
