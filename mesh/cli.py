"""`scale0 mesh`: watch a node's load table from the terminal.

Fetches `/_scale0/mesh` from the node's admin listener (plain urllib: one small
GET a second needs no client library) and draws it with `mesh.view`.
`--once` prints the table, `--json` the document as the node sent it, and by
default a rich Live display redraws in place until Ctrl-C. Errors are one line
on stderr and exit status 1: the operator wants "node unreachable at X", not a
traceback. node/cli.py mounts this with `add_mesh_parser` and `run_mesh`;
`python -m mesh.cli` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from mesh.view import MeshJSONError, parse_mesh_json, render_snapshot

DEFAULT_ADMIN = "http://127.0.0.1:8081"
MESH_PATH = "/_scale0/mesh"
MAX_DOCUMENT = 16 * 1024 * 1024  # far above 10k nodes; a runaway answer stops here


class MeshFetchError(Exception):
    """The admin listener could not be read (unreachable, not Scale0, bad answer)."""


def mesh_url(admin: str) -> str:
    """The mesh JSON URL for an admin address given as URL or HOST:PORT."""
    base = admin.strip().rstrip("/")
    if "://" not in base:
        base = "http://" + base
    if not base.startswith(("http://", "https://")):
        raise MeshFetchError(f"--admin must be an http(s) URL or HOST:PORT, got {admin!r}")
    return base + MESH_PATH


def fetch_mesh(admin: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET the mesh document; raises MeshFetchError with a one-line reason."""
    url = mesh_url(admin)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = resp.read(MAX_DOCUMENT + 1)
    except urllib.error.HTTPError as exc:
        raise MeshFetchError(f"{url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MeshFetchError(f"cannot reach the node's admin listener at {url}: {reason}") from None
    if len(body) > MAX_DOCUMENT:
        raise MeshFetchError(f"{url} sent more than {MAX_DOCUMENT} bytes; is it a Scale0 node?")
    try:
        doc = json.loads(body)
    except ValueError:
        raise MeshFetchError(f"{url} did not answer JSON; is it a Scale0 admin listener?") from None
    if not isinstance(doc, dict):
        raise MeshFetchError(f"{url} answered JSON that is not a mesh table")
    return doc


def add_mesh_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `mesh` to a `scale0` subcommand set; returns the new parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "mesh",
        help="watch the mesh load table",
        description="Show a node's view of the mesh: every node, its state and per-service load.",
    )
    _add_arguments(parser)
    parser.set_defaults(func=run_mesh)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin",
        default=DEFAULT_ADMIN,
        help=f"the node's admin listener (default {DEFAULT_ADMIN})",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="print the table once and exit")
    mode.add_argument("--json", action="store_true", help="print the JSON document and exit")
    parser.add_argument(
        "--interval",
        type=_positive,
        default=1.0,
        help="seconds between refreshes of the live table (default 1)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=5.0,
        help="seconds to wait for the node to answer (default 5)",
    )


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 seconds, got {text}")
    return value


def run_mesh(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run `scale0 mesh`; returns the process exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        doc = fetch_mesh(args.admin, args.timeout)
        if args.json:
            json.dump(doc, out, indent=2, sort_keys=False)
            out.write("\n")
            return 0
        snap = parse_mesh_json(doc)
    except (MeshFetchError, MeshJSONError) as exc:
        err.write(f"scale0 mesh: {exc}\n")
        return 1
    console = Console(file=out)
    if args.once:
        console.print(render_snapshot(snap, title=f"mesh seen by {snap.self_id}"))
        return 0
    return _live(args, console, render_snapshot(snap, title=f"mesh seen by {snap.self_id}"))


def _live(args: argparse.Namespace, console: Console, first: RenderableType) -> int:
    view: RenderableType = first
    try:
        with Live(view, console=console, auto_refresh=False, screen=False) as live:
            while True:
                # Pacing the redraw, not synchronising anything: a plain sleep is right here.
                time.sleep(args.interval)
                try:
                    snap = parse_mesh_json(fetch_mesh(args.admin, args.timeout))
                    view = render_snapshot(snap, title=f"mesh seen by {snap.self_id}")
                    live.update(view, refresh=True)
                except (MeshFetchError, MeshJSONError) as exc:
                    # Keep the last table on screen; say what is wrong under it.
                    stamp = time.strftime("%H:%M:%S")
                    live.update(Group(view, Text(f"{stamp} {exc}", style="red")), refresh=True)
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scale0 mesh", description=__doc__)
    _add_arguments(parser)
    return run_mesh(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
