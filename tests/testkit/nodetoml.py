"""The listening part of a node's TOML config for a node run inside a test: every
socket on loopback at a free port, never a default one another process may hold."""

from __future__ import annotations

from node.freeport import free_port


def loopback_listeners(node_id: str) -> str:
    """`id`, the http/admin/gossip/peer addresses and `[workers] endpoint` (put the
    other top-level keys before this text: it ends inside the `[workers]` table)."""
    tcp = "tcp://127.0.0.1"
    return (f'id = "{node_id}"\nhttp = "127.0.0.1:{free_port()}"\n'
            f'admin = "127.0.0.1:{free_port()}"\ngossip = "{tcp}:{free_port()}"\n'
            f'peer = "{tcp}:{free_port()}"\ngossip_preset = "local"\n'
            f'[workers]\nendpoint = "{tcp}:{free_port()}"\n')
