"""``python -m benchmarks``: the rtcp benchmark suite (see benchmarks/README.md)."""

import sys

from .suite import main

sys.exit(main())
