"""WSGI applications the system tests run in real workers (``--app tests.apps.basic:app``)."""
