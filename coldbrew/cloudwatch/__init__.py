"""The CloudWatch metrics API (GetMetricStatistics, GetMetricData, ListMetrics) over the meter.

SageMaker's endpoint metrics, namespaces ``AWS/SageMaker`` and ``/aws/sagemaker/Endpoints``, in
all three protocols CloudWatch clients speak (``protocols``), served on the gateway's port for
requests signed for ``monitoring`` (``coldbrew.gateway.service_router``).
"""

from __future__ import annotations

from coldbrew.cloudwatch.app import CloudWatchApp

__all__ = ["CloudWatchApp"]
