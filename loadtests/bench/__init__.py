"""Side-by-side benchmarks of webcluster, gunicorn (gthread), waitress and nginx; see ``__main__``.

Modules: ``wrk`` (run and parse wrk), ``servers`` (start/stop/measure each server), ``idle`` (many idle
keep-alive connections), ``suites`` (the two experiments), ``report`` (medians, tables, plot).
"""
