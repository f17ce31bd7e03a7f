"""The Ray backend: execution environments on the nodes of a Ray cluster (issue 16).

Nothing here imports Ray at import time: the default install (and the default test run) never
needs it. :mod:`.placement` is pure; :mod:`.agent` is the per-node actor's class (plain Python,
made a Ray actor by the backend); :mod:`.backend` is what serving talks to.
"""
