"""Scale0's wheel: pure Python unless SCALE0_COMPILED=1. The metadata is in pyproject.toml.

    pip install .                                        # pure (py3-none-any), no compiler
    make wheel                                           # the hot modules compiled (mypyc)
    SCALE0_COMPILED=1 pip wheel --no-build-isolation .   # the same, from the development venv

The opt-in is an environment variable, as mypy's MYPY_USE_MYPYC, so that a plain build never
needs a C compiler or mypy. The compiled wheel (cp3XX-cp3XX-<platform>) carries each listed
module's extension beside its .py; scripts/build_compiled.py makes them, the one place that
knows the list, the shared library and the parallel compile (`make compiled` builds the same
in place). It needs mypy and the project's dependencies in the Python that runs this file,
hence no build isolation: `make wheel` (`scripts/build_compiled.py --wheel dist`) uses the
development venv.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

# The build's one place (stdlib-only at import, so a pure build needs nothing more).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts"))
import build_compiled

setup(**(build_compiled.wheel_setup() if os.environ.get(build_compiled.OPT_IN) == "1" else {}))
