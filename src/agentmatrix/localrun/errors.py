"""The error every part of `agentmatrix run` raises for a run it cannot do."""


class RunError(RuntimeError):
    """The evaluation could not be run; the message says what to fix."""
