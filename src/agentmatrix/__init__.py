"""agentmatrix: measure and guard self-replication of LLM agents on Kubernetes."""

__version__ = "0.1.0"
