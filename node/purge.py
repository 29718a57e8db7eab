"""Purging the cache by hand: the admin endpoint and `scale0 purge`.

`POST /_scale0/purge` on the admin listener takes `{"url": "http://host/path"}`
(one URL, every variant) or a URL ending in `*` (every key under that prefix),
purges this node's store and, through replication, every node's store (purges
travel reliably: a node that missed the message asks again). The answer says
how many entries this node removed. `PURGE <url>` on the public port does the
same for allowed client networks (node/cachestage.py).

A purge whose delete failed on this node (read-only disk, no permission) is never
reported as a plain success: the answer is 202 with `"failed"` (how many entries
could not be deleted, null if unknown) and `"error"`, while the node keeps the purged
URL(s) from being served (see node.purgecount.purge_answer for why 202), and
`scale0 purge` prints a warning saying so.

`scale0 purge` takes the admin listener as `--admin HOST:PORT` or a URL, and an
admin listener off loopback's bearer token from `--admin-token-file`, exactly as
`scale0 mesh` does (mesh/cli.py); a 401 says which of the two is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import tornado.web

from mesh.cli import NOT_ADMIN, AdminAddressError, MeshFetchError, _positive, admin_base, read_token
from node.errors import ClientError
from node.purgecount import purge_answer

Purger = Callable[[str], Awaitable[int]]
MAX_BODY = 16 * 1024
DEFAULT_ADMIN = "http://127.0.0.1:8081"


class PurgeHandler(tornado.web.RequestHandler):
    def initialize(self, purge: Purger | None) -> None:
        self.purge = purge

    def _answer(self, status: int, doc: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(doc) + "\n")

    async def post(self) -> None:
        if self.purge is None:
            self._answer(409, {"error": "this node has no cache (--cache off)"})
            return
        body = self.request.body
        if len(body) > MAX_BODY:
            self._answer(413, {"error": f"body over {MAX_BODY} bytes"})
            return
        url = self.get_argument("url", "")
        if not url and body:
            try:
                doc = json.loads(body)
            except ValueError:
                self._answer(400, {"error": 'expected JSON {"url": "..."} or a url= form field'})
                return
            url = doc.get("url", "") if isinstance(doc, dict) else ""
        if not isinstance(url, str) or not url:
            self._answer(400, {"error": 'missing "url"'})
            return
        try:
            removed = await self.purge(url)
        except ClientError as exc:
            self._answer(400, {"error": exc.reason})
            return
        status, failure = purge_answer(removed)
        doc = {"url": url, "prefix": url.endswith("*"), "removed_here": int(removed)}
        if failure:
            doc |= {"failed_here": failure["failed"], "error": failure["error"]}
        self._answer(status, doc)


def purge_route(
    purge: Purger | None,
) -> tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]:
    return (r"/_scale0/purge", PurgeHandler, {"purge": purge})


def add_purge_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "purge",
        help="remove a URL (or a URL prefix ending in *) from every node's cache",
        description="Purge one URL, or every URL under a prefix (end it with *), from the "
        "cache of the node behind --admin and, by replication, from every node of the mesh.",
        epilog="examples:\n  scale0 purge http://www.example.com/news/today\n"
        "  scale0 purge 'http://www.example.com/assets/*'\n"
        "  scale0 purge --admin 10.0.0.11:8081 --admin-token-file /etc/scale0/admin-token \\\n"
        "      http://www.example.com/news/today\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "url", metavar="URL-OR-PREFIX", help="absolute URL; end with * for a prefix"
    )
    # The admin flags of `scale0 mesh` (mesh/cli.py), same names and meaning.
    parser.add_argument("--admin", default=DEFAULT_ADMIN, metavar="URL|HOST:PORT",
                        help=f"the node's admin listener (default {DEFAULT_ADMIN})")
    parser.add_argument("--admin-token-file", metavar="FILE", default="",
                        help="the bearer token of an admin listener off loopback (the file "
                        "the node's --admin-token-file names); default: none")
    parser.add_argument("--timeout", type=_positive, default=10.0, metavar="SECONDS",
                        help="seconds to wait for the node to answer (default 10)")
    parser.set_defaults(func=run_purge)
    return parser


def purge_url(admin: str) -> str:
    """The purge endpoint of an admin listener given as a URL or as HOST:PORT
    (AdminAddressError otherwise, as `scale0 mesh` says it)."""
    return admin_base(admin) + "/_scale0/purge"


def entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def run_purge(args: argparse.Namespace) -> int:
    token_file = getattr(args, "admin_token_file", "")
    try:
        url = purge_url(args.admin)
        token = read_token(token_file) if token_file else ""
    except (ValueError, MeshFetchError) as exc:
        print(f"scale0 purge: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, AdminAddressError) else 1
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps({"url": args.url}).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as resp:
            answer = resp.read(MAX_BODY)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:  # as scale0 mesh says it
            hint = ("the token was refused" if token
                    else "this admin listener wants its token: give --admin-token-file")
            print(f"scale0 purge: {url} answered 401: {hint}", file=sys.stderr)
            return 1
        try:
            reason = json.loads(exc.read(MAX_BODY)).get("error", exc.reason)
        except (ValueError, AttributeError):
            reason = exc.reason
        hint = f"; {NOT_ADMIN}" if exc.code == 404 else ""
        print(f"scale0 purge: {url} answered {exc.code}: {reason}{hint}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"scale0 purge: cannot reach the node's admin listener at {url}: {reason}",
              file=sys.stderr)
        return 1
    try:
        doc = json.loads(answer)
    except ValueError:  # it answered, but not as an admin listener (a public port, a web page)
        print(f"scale0 purge: {url} did not answer JSON; {NOT_ADMIN}", file=sys.stderr)
        return 1
    removed = doc.get("removed_here") if isinstance(doc, dict) else None
    if not isinstance(removed, int):
        print(f"scale0 purge: {url} did not answer a purge; is it a Scale0 admin listener?",
              file=sys.stderr)
        return 1
    print(f"purged {args.url}: {entries(removed)} here; "
          "the purge is on its way to every node")
    error = doc.get("error")
    if error:
        failed = doc.get("failed_here")
        what = entries(failed) if isinstance(failed, int) else "some entries"
        print(f"scale0 purge: warning: the node could not delete {what} from its cache "
              f"store ({error}); it will not serve them, but the store needs attention",
              file=sys.stderr)
    return 0
