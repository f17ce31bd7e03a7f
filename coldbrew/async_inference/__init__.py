"""Asynchronous inference: InvokeEndpointAsync, a durable queue, results and notifications.

A request is accepted only once it is in the queue's SQLite file; a dispatcher drains each
endpoint's queue through the same scaling core as real-time invocations, writes the model's answer
(or the failure) to S3, and publishes to SNS if the endpoint config asks for it.
"""
