"""``python -m kzoo.bench``: the same as ``kzoo bench``."""

import sys

from kzoo.bench.cli import cli_main

sys.exit(cli_main())
