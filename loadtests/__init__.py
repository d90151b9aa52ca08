"""Load tests, run from a checkout (not installed). Importing the package makes the checkout the
``webcluster`` package (see supervisor.py)."""

import supervisor  # noqa: F401
