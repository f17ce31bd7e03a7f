"""Data capture: an endpoint config's DataCaptureConfig, the records SageMaker's Model Monitor
reads, and the writer that batches them to S3 off the hot path."""

from coldbrew.capture.config import CaptureConfig
from coldbrew.capture.writer import CaptureWriter

__all__ = ["CaptureConfig", "CaptureWriter"]
