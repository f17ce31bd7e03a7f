"""Serving: the live side of scaling.

The control plane hands serving one typed target per endpoint (:mod:`coldbrew.serving.targets`).
Serving sizes each variant (:mod:`.sizing`), registers it as a pool of the machine's scaling core
and carries out the core's actions with real workers (:mod:`.pools`): it decides nothing about
scaling itself. An invocation picks a variant (:mod:`.router`), leases an environment from the
pools and calls its worker (:mod:`.invoke`); :mod:`.service` ties deploys, undeploys and
housekeeping (worker health, the RSS watchdog in :mod:`.watchdog`) together.
"""
