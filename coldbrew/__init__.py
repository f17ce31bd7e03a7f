"""coldbrew: self-hosted serverless ML inference that speaks the Amazon SageMaker API."""

__version__ = "0.1.0"
