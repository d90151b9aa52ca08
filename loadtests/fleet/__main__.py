"""``python -m loadtests.fleet --help``."""

import sys

from loadtests.fleet.runner import main

sys.exit(main())
