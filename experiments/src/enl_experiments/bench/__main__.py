"""``python -m enl_experiments.bench`` (what ``make bench`` runs)."""

import sys

from enl_experiments.bench.cli import main

sys.exit(main())
