"""The Kopf operator that runs ReplicationEval trials (see docs/operator.md)."""

if __name__ == "operator":
    # This folder is `agentmatrix.operator`. With the repository root on sys.path (PYTHONPATH=.,
    # `python -m ...` in the root) it is also found as the top-level `operator`, where it would
    # shadow the standard library module every other package imports: put that module in its place.
    # Only modules loaded at start-up are used here (functools, importlib.util need `operator`).
    import os
    import sys
    from importlib._bootstrap import module_from_spec
    from importlib.machinery import PathFinder

    _spec = PathFinder.find_spec("operator", [os.path.dirname(os.__file__)])
    if _spec is None or _spec.loader is None:
        raise ImportError("the standard library's `operator` module was not found")
    _standard = module_from_spec(_spec)
    sys.modules["operator"] = _standard
    _spec.loader.exec_module(_standard)
