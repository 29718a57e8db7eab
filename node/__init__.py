"""The Scale0 node process: HTTP front door, request pipeline, worker broker, worker SDK, CLI."""

from node.buildinfo import check as _check_build

_check_build()  # a compiled module older than its .py stops here (node/buildinfo.py)
