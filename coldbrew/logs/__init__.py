"""CloudWatch Logs for coldbrew's endpoints: capture, store and the Logs API.

Each execution environment's stdout and stderr, and coldbrew's own events about it (started,
failed to start, released and why: idle, evicted, over its memory size, timed out), go to the
log group ``/aws/sagemaker/Endpoints/<EndpointName>``, one stream per environment,
``<VariantName>/i-<17 hex digits>``, as SageMaker names an instance's stream.

- :mod:`~coldbrew.logs.collector`: one pipe per environment and the thread that reads them all
  into the store, off the invoke path; :mod:`~coldbrew.logs.store`: the SQLite store, its
  per-endpoint cap (oldest events dropped first, counted) and retention;
- :mod:`~coldbrew.logs.api`: DescribeLogGroups, DescribeLogStreams, GetLogEvents and
  FilterLogEvents (:mod:`~coldbrew.logs.query`, with :mod:`~coldbrew.logs.patterns` and
  :mod:`~coldbrew.logs.tokens`), so boto3, ``aws logs`` and ``aws logs tail --follow`` work;
- :mod:`~coldbrew.logs.cli`: ``coldbrew logs ENDPOINT [--follow]``.
"""
