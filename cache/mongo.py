"""A MongoDB store: the shared tier many nodes may point at (PyMongo's AsyncMongoClient).

Two modes, chosen by config:
- "capped" (default; the original Scale0 idea): a capped collection of max_bytes
  that keeps its own size by dropping the oldest documents. Documents are only
  ever inserted, never updated (older servers refuse updates that change a
  capped document's size): a put inserts a new version and deletes the older
  ones, and a read takes the newest version of each variant. MongoDB refused
  deletes on capped collections before 5.0.7 (SERVER-63201); there a delete
  writes a tombstone document instead, which hides older versions until the
  collection ages them out. Detected from the server version at open and, to
  be sure, from the refusal itself.
- "ttl": a normal collection with a unique (key, variant) index and a TTL index
  on `expires` (now + ttl_seconds at put); newer-wins is one conditional upsert.

Prefix purges use an anchored, escaped regex on `key`, which the key index
serves. Bodies too big for a 16 MiB BSON document (over 15 MiB) are refused and
counted. Every document read back is validated; a malformed one is skipped and
counted in stats().corrupt. A MongoDB that cannot be reached makes get() a miss
and put() a refusal (logged), so the node keeps serving; delete and purge raise.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pymongo import AsyncMongoClient, uri_parser
from pymongo.errors import CollectionInvalid, DuplicateKeyError, OperationFailure, PyMongoError

from cache.entry import CacheEntry
from cache.store import StoreStats

log = logging.getLogger("scale0.cache.mongo")

MAX_BODY = 15 * 1024 * 1024  # leaves room for metadata under BSON's 16 MiB
MAX_VERSIONS = 256  # documents read per key (variants x versions); more is someone's bug
MAX_HEADERS = 1000
MAX_STR = 64 * 1024
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_TTL = 86400.0
_META = {"body": 0}  # projection: everything but the body
_CAPPED_DELETE_SINCE = (5, 0, 7)
_DELETE_REFUSED = 20  # IllegalOperation: "cannot remove from a capped collection"

Doc = dict[str, Any]



def _check_url(url: str) -> None:
    """ValueError, before any connection, for a URL pymongo would refuse when the node
    opens the store (a bad port, an unknown option): --check-config says so too. The
    password never appears in the message."""
    from cache.stores import redact

    try:
        uri_parser.parse_uri(url, warn=False)
    except (PyMongoError, ValueError) as exc:
        why = str(exc)
        password = urlsplit(url).password
        if password:
            why = why.replace(password, "***")
        raise ValueError(f"mongo store: {redact(url)!r}: {why}") from None


def client_options(url: str) -> dict[str, Any]:
    """The keyword options the client gets besides `url`: a 5 s server selection (a node
    must not sit pymongo's 30 s at start) unless the URL names its own. A keyword beats the
    URL's option in pymongo, so `?serverSelectionTimeoutMS=` would be silently ignored."""
    named = {name.lower() for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    return {} if "serverselectiontimeoutms" in named else {"serverSelectionTimeoutMS": 5000}


class MongoStore:
    def __init__(
        self,
        url: str,
        database: str = "scale0",
        collection: str = "cache",
        *,
        mode: str = "capped",
        max_bytes: int = DEFAULT_MAX_BYTES,
        ttl_seconds: float = DEFAULT_TTL,
        max_entry_bytes: int = MAX_BODY,
    ) -> None:
        if mode not in ("capped", "ttl"):
            raise ValueError(f"mongo store: mode must be 'capped' or 'ttl', not {mode!r}")
        if max_bytes < 4096 or ttl_seconds <= 0:
            raise ValueError("mongo store: max_bytes must be >= 4096 and ttl_seconds > 0")
        self.url, self.database, self.collection, self.mode = url, database, collection, mode
        self.max_bytes, self.ttl_seconds = max_bytes, ttl_seconds
        self.max_entry_bytes = min(max_entry_bytes, MAX_BODY, max_bytes)
        self._client: AsyncMongoClient[Doc] | None = None
        self._tombstones = False
        self._stats = StoreStats(capacity=max_bytes)

    @classmethod
    def from_spec(cls, location: str, options: Mapping[str, str]) -> MongoStore:
        """`mongo:mongodb://host/#mode=ttl&ttl=3600&max=2GiB&db=scale0&collection=cache`."""
        from cache.stores import parse_size, redact, unknown_options

        unknown_options("mongo", options, {"mode", "ttl", "max", "max_entry", "db", "collection"})
        if not location.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError(f"mongo store: {redact(location)!r} is not a mongodb:// URL")
        if location.startswith("mongodb://"):  # +srv would need DNS: checked at open()
            _check_url(location)
        try:
            ttl = float(options.get("ttl", DEFAULT_TTL))
        except ValueError:
            raise ValueError(f"mongo store: ttl={options['ttl']!r} is not seconds") from None
        return cls(
            location, options.get("db", "scale0"), options.get("collection", "cache"),
            mode=options.get("mode", "capped"), max_bytes=parse_size(options.get("max", "1GiB")),
            ttl_seconds=ttl,
            max_entry_bytes=parse_size(options.get("max_entry", str(MAX_BODY))),
        )

    @property
    def _coll(self) -> Any:
        if self._client is None:
            raise RuntimeError("mongo store used before open()")
        return self._client[self.database][self.collection]

    async def open(self) -> None:
        """Connect, create the collection and its indexes if absent (races with peers are fine).
        A server that cannot be reached or refuses us is a ConnectionError saying so in one
        line (pymongo's message names hosts, never the URL's password)."""
        try:
            await self._open()
        except PyMongoError as exc:
            if self._client is not None:  # its monitor tasks, cancelled at the loop's end
                # instead, held the node's exit for some 10 s
                await self._client.close()
                self._client = None
            reason = str(exc).split(", Topology Description")[0]
            raise ConnectionError(f"cannot open the MongoDB store: {reason}") from None

    async def _open(self) -> None:
        self._client = AsyncMongoClient(self.url, **client_options(self.url))
        db = self._client[self.database]
        info = await self._client.server_info()
        version = tuple(int(x) for x in info.get("versionArray", [0, 0, 0])[:3])
        try:
            if self.mode == "capped":
                await db.create_collection(self.collection, capped=True, size=self.max_bytes)
            else:
                await db.create_collection(self.collection)
        except CollectionInvalid:
            pass  # it exists already (another node made it)
        except OperationFailure as exc:
            if exc.code != 48:  # NamespaceExists: lost the race to another node
                raise
        capped = bool((await self._coll.options()).get("capped"))
        if capped != (self.mode == "capped"):
            raise ValueError(
                f"mongo store: collection {self.database}.{self.collection} exists and is "
                f"{'' if capped else 'not '}capped; use mode={'capped' if capped else 'ttl'} "
                "or another collection"
            )
        await self._coll.create_index([("key", 1)])
        if self.mode == "capped":
            self._tombstones = version < _CAPPED_DELETE_SINCE
            await self._coll.create_index([("key", 1), ("variant", 1)])
            await self._coll.create_index([("tomb", 1)], sparse=True)
        else:
            await self._coll.create_index([("key", 1), ("variant", 1)], unique=True)
            await self._coll.create_index([("expires", 1)], expireAfterSeconds=0)
        self._stats.entries = await self._coll.estimated_document_count()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def get(self, key: str) -> list[CacheEntry]:
        try:
            entries = await self._visible(key, None, with_body=True)
        except PyMongoError as exc:
            self._count_error("get")
            log.warning("mongo store unavailable on get: %s", exc)
            return []
        return sorted(entries.values(), key=lambda e: e.variant)

    async def put(self, entry: CacheEntry) -> bool:
        if entry.size > self.max_entry_bytes:
            self._stats.rejected += 1
            return False
        doc = _encode(entry)
        try:
            if self.mode == "ttl":
                return await self._put_ttl(entry, doc)
            current = (await self._visible(entry.key, entry.variant, with_body=False)).values()
            if any(not entry.newer_than(old) for old in current):
                return False
            await self._coll.insert_one(doc)
            try:  # older versions are dead weight; on servers that refuse, reads skip them
                await self._coll.delete_many(
                    {"key": entry.key, "variant": entry.variant, "_id": {"$ne": doc["_id"]},
                     "tomb": {"$exists": False}, **_older_than(entry)}
                )
            except OperationFailure:
                pass
        except PyMongoError as exc:
            self._count_error("put")
            log.warning("mongo store unavailable on put: %s", exc)
            return False
        self._stats.entries += 1
        self._stats.bytes += entry.size
        return True

    async def _put_ttl(self, entry: CacheEntry, doc: Doc) -> bool:
        doc["expires"] = datetime.now(UTC) + timedelta(seconds=self.ttl_seconds)
        expired = {"expires": {"$lte": datetime.now(UTC)}}
        query: Doc = {"key": entry.key, "variant": entry.variant}
        query["$or"] = [*_older_than(entry)["$or"], expired]
        try:
            await self._coll.replace_one(query, doc, upsert=True)
        except DuplicateKeyError:
            return False  # a newer (or the same) version is stored
        return True

    async def delete(self, key: str, variant: str | None = None) -> int:
        query: Doc = {"key": key} if variant is None else {"key": key, "variant": variant}
        count = len(await self._visible(key, variant, with_body=False))
        tomb: Doc = {"tomb": "key" if variant is None else "variant", **query}
        try:
            await self._remove(query, tomb)
        except PyMongoError:
            self._count_error("delete")
            raise
        return count

    async def purge_prefix(self, prefix: str) -> int:
        try:
            return await self._remove(
                {"key": _prefix_regex(prefix)}, {"tomb": "prefix", "key": prefix}
            )
        except PyMongoError:
            self._count_error("delete")
            raise

    async def keys_with_prefix(self, prefix: str) -> list[str]:
        query = {"key": _prefix_regex(prefix), "tomb": {"$exists": False}}
        keys = [k for k in await self._coll.distinct("key", query) if isinstance(k, str)]
        if self._tombstones:  # some may be deleted by tombstones only
            keys = [k for k in keys if await self._visible(k, None, with_body=False)]
        return sorted(keys)

    def stats(self) -> StoreStats:
        return dataclasses.replace(self._stats, errors=dict(self._stats.errors))

    def _count_error(self, op: str) -> None:
        self._stats.errors[op] = self._stats.errors.get(op, 0) + 1

    async def _remove(self, query: Doc, tomb: Doc) -> int:
        """Delete matching entry documents (or write a tombstone); how many documents."""
        live = {**query, "tomb": {"$exists": False}}
        if not self._tombstones:
            try:
                result = await self._coll.delete_many(live)
                self._stats.entries = max(0, self._stats.entries - result.deleted_count)
                return int(result.deleted_count)
            except OperationFailure as exc:
                if exc.code != _DELETE_REFUSED and "capped" not in str(exc):
                    raise
                self._tombstones = True
        count = await self._coll.count_documents(live)
        await self._coll.insert_one({**tomb, "stored": time.time()})
        return int(count)

    async def _visible(
        self, key: str, variant: str | None, with_body: bool
    ) -> dict[str, CacheEntry]:
        """The newest valid, not-deleted version of each variant of `key`."""
        query: Doc = {"key": key} if variant is None else {"key": key, "variant": variant}
        if self.mode == "ttl":
            query["expires"] = {"$gt": datetime.now(UTC)}
        projection = None if with_body else _META
        docs = await self._coll.find(query, projection).limit(MAX_VERSIONS).to_list(None)
        tombs: list[Doc] = []
        if self._tombstones:
            tombs = [d for d in docs if "tomb" in d]
            prefix_tombs = self._coll.find({"tomb": "prefix"}).limit(10_000)
            tombs += [
                t async for t in prefix_tombs if _str(t.get("key")) and key.startswith(t["key"])
            ]
        best: dict[str, tuple[CacheEntry, float]] = {}
        for doc in docs:
            if "tomb" in doc:
                continue
            entry = _decode(doc, with_body)
            if entry is None:
                self._stats.corrupt += 1
                continue
            stored = doc.get("stored", 0.0)
            if any(_hides(t, entry, stored) for t in tombs):
                continue
            old = best.get(entry.variant)
            if old is None or entry.newer_than(old[0]):
                best[entry.variant] = (entry, stored)
        return {v: e for v, (e, _) in best.items()}


def _encode(entry: CacheEntry) -> Doc:
    return {
        "key": entry.key, "variant": entry.variant, "status": entry.status,
        "headers": [list(h) for h in entry.headers], "body": entry.body,
        "rq": entry.request_time, "rs": entry.response_time, "origin": entry.origin,
        "stored": time.time(), "size": entry.size,
    }


def _decode(doc: Doc, with_body: bool) -> CacheEntry | None:
    """The entry in `doc`, or None when any field has the wrong type or size."""
    try:
        headers = doc["headers"]
        body = doc["body"] if with_body else b""
        ok = (
            all(_str(doc[f]) for f in ("key", "variant", "origin"))
            and type(doc["status"]) is int and 100 <= doc["status"] <= 999
            and all(type(doc[f]) in (int, float) and math.isfinite(doc[f]) for f in ("rq", "rs"))
            and isinstance(body, bytes) and len(body) <= MAX_BODY
            and isinstance(headers, list) and len(headers) <= MAX_HEADERS
            and all(isinstance(h, list) and len(h) == 2 and _str(h[0]) and _str(h[1])
                    for h in headers)
        )
        if not ok:
            return None
        return CacheEntry(
            key=doc["key"], variant=doc["variant"], status=doc["status"],
            headers=tuple((h[0], h[1]) for h in headers), body=body,
            request_time=float(doc["rq"]), response_time=float(doc["rs"]), origin=doc["origin"],
        )
    except (KeyError, TypeError):
        return None


def _str(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_STR


def _hides(tomb: Doc, entry: CacheEntry, stored: object) -> bool:
    t_stored = tomb.get("stored")
    if type(t_stored) is not float or type(stored) is not float or stored > t_stored:
        return False
    kind = tomb.get("tomb")
    if kind == "prefix":
        return True  # only prefix tombstones matching the key were fetched
    if kind == "variant":
        return bool(tomb.get("key") == entry.key and tomb.get("variant") == entry.variant)
    return bool(kind == "key" and tomb.get("key") == entry.key)


def _older_than(entry: CacheEntry) -> Doc:
    """Documents of the same key+variant that `entry` is newer than (CacheEntry.newer_than)."""
    return {"$or": [{"rs": {"$lt": entry.response_time}},
                    {"rs": entry.response_time, "origin": {"$lt": entry.origin}}]}


def _prefix_regex(prefix: str) -> Doc:
    # Anchored and escaped, so the key index bounds the scan to the prefix's range.
    return {"$regex": "^" + re.escape(prefix)}
