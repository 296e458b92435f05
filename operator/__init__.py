"""The Kopf operator that runs ReplicationEval trials (see docs/operator.md)."""
