"""The test suite. Importing it makes the checkout the ``webcluster`` package (see supervisor.py), so
``python -m pytest`` and ``python -m tests.apps...`` run this tree's code even without an install."""

import supervisor  # noqa: F401
