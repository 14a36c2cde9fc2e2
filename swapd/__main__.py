"""``python -m swapd`` runs the command line."""

import sys

from swapd.cli import main

sys.exit(main())
