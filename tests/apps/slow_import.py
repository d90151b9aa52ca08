"""tests.apps.basic behind a slow import (0.5 s, like a large Django project): a booting worker stays
visible long enough for reload tests to count the processes that exist at once."""

from __future__ import annotations

import time

from tests.apps.basic import app

time.sleep(0.5)

__all__ = ["app"]
