"""Shared test setup: hypothesis profiles (`HYPOTHESIS_PROFILE=ci` is the fast one CI uses),
and byte code for the processes the tests start."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.register_profile("thorough", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The suite starts hundreds of `scale0 node`/`scale0 worker`/origin processes. Under
# PYTHONDONTWRITEBYTECODE each one compiled this tree's sources again (about 0.25 s of
# a node's 0.5 s import): the children get a byte-code cache of their own instead, in a
# directory of this run (so nothing is written into the tree), removed at exit.
if os.environ.get("PYTHONDONTWRITEBYTECODE"):
    _pycache = tempfile.mkdtemp(prefix="scale0-test-pycache-")
    atexit.register(shutil.rmtree, _pycache, ignore_errors=True)
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = _pycache
