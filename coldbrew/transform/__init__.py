"""Batch transform: CreateTransformJob over S3 data, run through the models' workers."""
