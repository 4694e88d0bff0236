"""``python -m rtcp``: the same command line as the ``rtcp`` script."""

from .cli import main

raise SystemExit(main())
