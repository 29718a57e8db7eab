"""`python -m node`: the same as the `scale0` command."""

import sys

from node.cli import main

sys.exit(main())
