"""Where the access log goes, and in which format (config keys log_format, access_log...).

The `scale0.access` logger gets a handler of its own that writes the message
alone — the record already carries its time — to stderr or to
`access_log_file` (appended; reopened on every reload, so logrotate's
`postrotate kill -HUP` works), and does not propagate to the root logger's
"time level name:" prefix, so a JSON line stays one JSON object. Called at
start and on every SIGHUP; each call replaces the previous handler.
"""

from __future__ import annotations

import logging
import sys
from contextlib import nullcontext

from node.accesslog import AccessLog, access_log
from node.config import NodeConfig

_MARK = "_scale0_access_handler"
BUFFERED = 256  # access lines held before a write


class LineBuffer(logging.Handler):
    """Access lines held in memory and written `capacity` at a time, or when `flush()` is
    called, to the target handler's stream (nginx's `access_log ... buffer= flush=`).

    `write_line` is the access log's own path: a finished line, no LogRecord (building
    one per request cost more than answering a prepared hit). Records other code logs to
    `scale0.access` still arrive through `emit`; a warning is written out at once."""

    def __init__(self, target: logging.StreamHandler, capacity: int) -> None:  # type: ignore[type-arg]
        super().__init__(logging.INFO)
        self.target = target
        self.capacity = capacity
        self.lines: list[str] = []

    def write_line(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) >= self.capacity:
            self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        self.write_line(self.format(record))
        if record.levelno >= logging.WARNING:
            self.flush()

    def flush(self) -> None:
        lines, self.lines = self.lines, []
        if not lines:
            return
        target = self.target
        with target.lock or nullcontext():
            try:
                target.stream.write("\n".join(lines) + "\n")
                target.stream.flush()
            except (OSError, ValueError) as exc:  # a full disk or a closed stream: not fatal
                print(f"scale0: {len(lines)} access lines lost: {exc}", file=sys.stderr)

    def close(self) -> None:
        self.flush()
        super().close()


def flush() -> None:
    """Write out the buffered access lines (the node calls this every second)."""
    for handler in access_log.handlers:
        if getattr(handler, _MARK, False):
            handler.flush()


def configure(config: NodeConfig, node_id: str) -> AccessLog | None:
    """Set up the access logger for `config`; the AccessLog to write through (None: off)."""
    handler: logging.Handler | None = None
    if config.access_log:  # opened first: a file that cannot be opened leaves the old one
        if config.access_log_file:
            handler = logging.FileHandler(config.access_log_file, encoding="utf-8")
        else:
            handler = logging.StreamHandler(sys.stderr)
    logging.getLogger().setLevel(config.log_level.upper())
    for old in list(access_log.handlers):
        if getattr(old, _MARK, False):
            access_log.removeHandler(old)
            target = getattr(old, "target", None)  # the buffer's stream or file
            old.close()  # flushes what it holds
            if target is not None:
                target.close()
    if handler is None:
        access_log.disabled = True
        return None
    access_log.disabled = False
    handler.setFormatter(logging.Formatter("%(message)s"))
    # Like nginx's `access_log ... buffer= flush=1s`: one write per BUFFERED lines, not one
    # per request; `flush()` runs every second and at shutdown, warnings go out at once.
    buffered = LineBuffer(handler, BUFFERED)  # type: ignore[arg-type]
    buffered.setFormatter(logging.Formatter("%(message)s"))
    setattr(buffered, _MARK, True)
    access_log.addHandler(buffered)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    return AccessLog(config.log_format, node=node_id, redact=config.access_log_redact,
                     sink=buffered.write_line)
