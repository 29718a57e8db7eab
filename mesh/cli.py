"""`scale0 mesh`: watch a node's load table from the terminal.

Fetches `/_scale0/mesh` from the node's admin listener (plain urllib: one small
GET a second needs no client library) and draws it with `mesh.view`.
`--once` prints the table, `--json` the document as the node sent it, and by
default a rich Live display redraws in place until Ctrl-C (when stdout is not a
terminal, a new table is printed each interval instead: Live would show nothing
until the end). An admin listener off loopback wants its bearer token
(`--admin-token-file`, the node's own flag of that name). Errors are one line
on stderr and exit status 1: the operator wants "node unreachable at X", not a
traceback. node/cli.py mounts this with `add_mesh_parser` and `run_mesh`;
`python -m mesh.cli` runs it alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, TextIO
from urllib.parse import urlsplit

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from mesh.view import MeshJSONError, parse_mesh_json, render_snapshot

DEFAULT_ADMIN = "http://127.0.0.1:8081"  # the node's own default --admin (node.config)
# Said with a 404: the address answers HTTP, but not as an admin listener.
NOT_ADMIN = "is this the node's admin address (--admin, default 127.0.0.1:8081)?"
MESH_PATH = "/_scale0/mesh"
DASHBOARD_PATH = "/_scale0"
MAX_DOCUMENT = 16 * 1024 * 1024  # far above 10k nodes; a runaway answer stops here
MAX_TOKEN = 4096  # a token file is one short line; anything bigger is the wrong file

EPILOG = """\
examples:
  scale0 mesh                                    # live, redrawn every second; Ctrl-C ends it
  scale0 mesh --admin 127.0.0.1:8091 --once      # another node's view, printed once
  scale0 mesh --json | jq '.nodes[] | {id, state}'
  scale0 mesh --admin http://10.0.0.11:8081 --admin-token-file /etc/scale0/admin-token

Columns: state (alive, suspect, dead, left), age of the last news, and per service
busy/slots, queued (q), workers (w), p50 latency, requests/s, forwarded in/out per s.
The same table in a browser: http://127.0.0.1:8081/_scale0/ (loopback only).
"""


class MeshFetchError(Exception):
    """The admin listener could not be read (unreachable, not Scale0, bad answer)."""


class AdminAddressError(MeshFetchError, ValueError):
    """`--admin` is neither an http(s) URL nor HOST:PORT: the operator's typo (exit 2)."""


def admin_base(admin: str) -> str:
    """The base URL of an admin listener given as an http(s) URL or as HOST:PORT
    (`bogus`, a host without a port, is refused rather than read as http://bogus/)."""
    text = admin.strip().rstrip("/")
    # The dashboard's address pasted as is (http://HOST:PORT/_scale0/, or its mesh JSON):
    # the admin listener is what is in front of it.
    for page in (MESH_PATH, DASHBOARD_PATH):
        if "://" in text and text.endswith(page):
            text = text.removesuffix(page)
            break
    url = text if "://" in text else "http://" + text
    bad = AdminAddressError(f"--admin {admin}: expected an http(s) URL or HOST:PORT, "
                            "e.g. 127.0.0.1:8081 or http://10.0.0.11:8081")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when it is not a number in 0-65535
    except ValueError:
        raise bad from None
    host = parts.hostname or ""
    if (parts.scheme not in ("http", "https") or not host or port == 0
            or any(c.isspace() or c in "@\\" for c in parts.netloc)
            or ("://" not in text and (port is None or parts.path))
            or parts.query or parts.fragment):
        raise bad
    return url


def mesh_url(admin: str) -> str:
    """The mesh JSON URL for an admin address given as URL or HOST:PORT."""
    return admin_base(admin) + MESH_PATH


def read_token(path: str) -> str:
    """The bearer token in the file at `path` (one line); MeshFetchError if unusable."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN + 1)
    except OSError as exc:
        raise MeshFetchError(f"--admin-token-file {path}: {exc.strerror or exc}") from None
    token = data.strip()
    if not token or len(data) > MAX_TOKEN or b"\n" in token:
        raise MeshFetchError(f"--admin-token-file {path}: expected the token on one line")
    return token.decode("utf-8", "replace")


def fetch_mesh(admin: str, timeout: float = 5.0, token: str = "") -> dict[str, Any]:
    """GET the mesh document; raises MeshFetchError with a one-line reason."""
    url = mesh_url(admin)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = resp.read(MAX_DOCUMENT + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            hint = ("the token was refused" if token
                    else "this admin listener wants its token: give --admin-token-file")
            raise MeshFetchError(f"{url} answered 401: {hint}") from None
        hint = f"; {NOT_ADMIN}" if exc.code == 404 else ""
        raise MeshFetchError(f"{url} answered {exc.code} {exc.reason}{hint}") from None
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
        description="Show a node's view of the mesh: every node, its state and per-service\n"
                    "load, as a table redrawn in place until Ctrl-C (--once, --json: print\n"
                    "and exit; into a pipe, one table per --interval).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    parser.set_defaults(func=run_mesh)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin",
        default=DEFAULT_ADMIN,
        metavar="URL|HOST:PORT",
        help=f"the node's admin listener (default {DEFAULT_ADMIN})",
    )
    parser.add_argument(
        "--admin-token-file",
        metavar="FILE",
        default="",
        help="the bearer token of an admin listener off loopback (the file the node's "
        "--admin-token-file names); default: none",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="print the table once and exit")
    mode.add_argument("--json", action="store_true", help="print the JSON document and exit")
    parser.add_argument(
        "--interval",
        type=_positive,
        default=1.0,
        metavar="SECONDS",
        help="seconds between refreshes of the live table (default 1)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=5.0,
        metavar="SECONDS",
        help="seconds to wait for the node to answer (default 5)",
    )


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 3600:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600 seconds, "
                                         f"got {text}")
    return value


def run_mesh(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run `scale0 mesh`; returns the process exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    token_file = getattr(args, "admin_token_file", "")
    try:
        token = read_token(token_file) if token_file else ""
        doc = fetch_mesh(args.admin, args.timeout, token)
        if args.json:
            json.dump(doc, out, indent=2, sort_keys=False)
            out.write("\n")
            return 0
        snap = parse_mesh_json(doc)
    except (MeshFetchError, MeshJSONError) as exc:
        err.write(f"scale0 mesh: {exc}\n")
        return 2 if isinstance(exc, AdminAddressError) else 1
    console = Console(file=out)
    first = render_snapshot(snap, title=f"mesh seen by {snap.self_id}")
    if args.once:
        console.print(first)
        return 0
    if not console.is_terminal:
        return _printed(args, token, console, first, err)
    return _live(args, token, console, first)


def _next_view(args: argparse.Namespace, token: str, stamped: bool = False) -> RenderableType:
    snap = parse_mesh_json(fetch_mesh(args.admin, args.timeout, token))
    when = f" at {time.strftime('%H:%M:%S')}" if stamped else ""  # printed tables pile up
    return render_snapshot(snap, title=f"mesh seen by {snap.self_id}{when}")


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (`timeout`, `kill`, a supervisor) ends live mode the way Ctrl-C does, so
    Live's exit shows the cursor again and ends the line (the shell is left usable)."""
    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (run_mesh called from a test's thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _live(args: argparse.Namespace, token: str, console: Console, first: RenderableType) -> int:
    view: RenderableType = first
    try:
        with _sigterm_as_ctrl_c(), Live(view, console=console, auto_refresh=False,
                                         screen=False) as live:
            while True:
                # Pacing the redraw, not synchronising anything: a plain sleep is right here.
                time.sleep(args.interval)
                try:
                    view = _next_view(args, token)
                    live.update(view, refresh=True)
                except (MeshFetchError, MeshJSONError) as exc:
                    # Keep the last table on screen; say what is wrong under it.
                    stamp = time.strftime("%H:%M:%S")
                    live.update(Group(view, Text(f"{stamp} {exc}", style="red")), refresh=True)
    except KeyboardInterrupt:
        return 0


def _printed(args: argparse.Namespace, token: str, console: Console, first: RenderableType,
             err: TextIO) -> int:
    """Live mode into a pipe or a file: one table per interval, each flushed at once."""
    view: RenderableType | None = first
    try:
        with _sigterm_as_ctrl_c():
            while True:
                if view is not None:
                    console.print(view)
                    console.file.flush()
                time.sleep(args.interval)  # pacing, as in _live
                try:
                    view = _next_view(args, token, stamped=True)
                except (MeshFetchError, MeshJSONError) as exc:
                    view = None
                    err.write(f"{time.strftime('%H:%M:%S')} scale0 mesh: {exc}\n")
                    err.flush()
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scale0 mesh", description=__doc__)
    _add_arguments(parser)
    return run_mesh(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
