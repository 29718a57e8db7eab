"""`scale0 keygen DIR [--name NAME]`: make a CurveZMQ key pair for a node or a worker.

node/cli.py adds it with `add_keygen_parser(subparsers)`; `run_keygen(args)`
runs it. The files are pyzmq certificates (NAME.key public, NAME.key_secret
secret, mode 0600). `--endpoint`/`--host` record where a node listens in its
public certificate, so peers that list it in `authorized/` know which key to
expect when they dial it (see node/curve.py).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from node.curve import NODE, CurveError, keygen

EPILOG = """\
layout:
  node KEYDIR:   node.key + node.key_secret, authorized/ with the .key of every
                 peer and worker allowed to connect
  worker KEYDIR: NAME.key + NAME.key_secret, and the node's node.key

examples:
  scale0 keygen /etc/scale0/keys --endpoint tcp://10.0.0.5:7946 --endpoint tcp://10.0.0.5:7947
  scale0 keygen /etc/scale0/worker-keys --name www-1
  cp /etc/scale0/worker-keys/www-1.key /etc/scale0/keys/authorized/   # then SIGHUP the node
"""


def add_keygen_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `keygen` sub-command to an argparse `subparsers` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "keygen", help="make a CurveZMQ key pair (for --curve)",
        description="Write NAME.key (public) and NAME.key_secret (secret) into DIR.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="directory for the key files (created if needed)")
    p.add_argument("--name", default=NODE, help=f"file name of the pair (default {NODE!r})")
    p.add_argument("--endpoint", action="append", default=[], metavar="ENDPOINT",
                   help="a gossip/peer endpoint this node listens on (repeat; for peers)")
    p.add_argument("--host", action="append", default=[], metavar="HOST",
                   help="a host whose every port is this node (instead of --endpoint)")
    p.set_defaults(func=run_keygen)
    return p


def run_keygen(args: argparse.Namespace) -> int:
    """Make the key pair; 0, or 1 with a message saying what is wrong."""
    meta: dict[str, str] = {}
    if args.endpoint:
        meta["endpoints"] = " ".join(args.endpoint)
    if args.host:
        meta["host"] = " ".join(args.host)
    try:
        public, secret = keygen(args.dir, args.name, meta or None)
    except (CurveError, OSError) as exc:
        print(f"scale0 keygen: {exc}", file=sys.stderr)
        return 1
    print(f"public key: {public}\nsecret key: {secret} (keep it private)")
    return 0
