"""Purging the cache by hand: the admin endpoint and `scale0 purge`.

`POST /_scale0/purge` on the admin listener takes `{"url": "http://host/path"}`
(one URL, every variant) or a URL ending in `*` (every key under that prefix),
purges this node's store and, through replication, every node's store (purges
travel reliably: a node that missed the message asks again). The answer says
how many entries this node removed. `PURGE <url>` on the public port does the
same for allowed client networks (node/cachestage.py).
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

from node.errors import ClientError

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
        self._answer(200, {"url": url, "prefix": url.endswith("*"), "removed_here": removed})


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
        "  scale0 purge 'http://www.example.com/assets/*'\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "url", metavar="URL-OR-PREFIX", help="absolute URL; end with * for a prefix"
    )
    parser.add_argument(
        "--admin",
        default=DEFAULT_ADMIN,
        help=f"the node's admin listener (default {DEFAULT_ADMIN})",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    parser.set_defaults(func=run_purge)
    return parser


def run_purge(args: argparse.Namespace) -> int:
    data = json.dumps({"url": args.url}).encode()
    request = urllib.request.Request(
        args.admin.rstrip("/") + "/_scale0/purge",
        data=data,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        print(f"scale0 purge: {exc.code}: {reason}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"scale0 purge: cannot reach {args.admin}: {exc}", file=sys.stderr)
        return 1
    print(
        f"purged {args.url}: {doc.get('removed_here', 0)} entries here; "
        "the purge is on its way to every node"
    )
    return 0
