"""``python -m enl_experiments.main`` (what ``make experiment`` runs)."""

import sys

from enl_experiments.main.cli import main

sys.exit(main())
