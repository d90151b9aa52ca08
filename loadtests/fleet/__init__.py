"""A fleet of webcluster hosts behind HAProxy on this machine, under distributed Locust load, with faults.

``python -m loadtests.fleet`` builds N hosts as network namespaces on a private bridge (addresses in
198.18.0.0/24; ``netns``), each running a webcluster supervisor with the demo app, ``--proxy-protocol``
and ``--drain-delay`` (``hosts``); HAProxy in its own namespace in front, configured from
``docs/deploy/haproxy.cfg`` (health checks on each host's /healthz, PROXY v2 to the hosts, a stats
socket; ``haproxy``); and a distributed Locust (master and workers in their own namespace) against
HAProxy. While the load runs it injects rolling restarts, rolling HUPs, a host crash and a host added
(``faults``). At the end it prints and writes the requests and failures by kind, each host's count from
its /stats, HAProxy's counts from its stats socket, and whether they agree (``summary``), plus a chart
of requests/s per host with the faults marked (``plot``).

Every namespace and process is the runner's own, removed at the end, also on Ctrl-C or an error.
"""
