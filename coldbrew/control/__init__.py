"""The control plane: what users asked for, validated like SageMaker and kept in SQLite."""
