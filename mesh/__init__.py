"""Deciding: the load table, routing and overflow policy, ownership hashing, forwarding to peers."""
