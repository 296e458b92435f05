"""The admission webhook: the server on top of the measurement core (`agentmatrix.measurement`).

Modules: `review` (AdmissionReview v1 in and out), `admission` (the decision), `peers` (shared
admissions between replicas), `server` (HTTPS, metrics), `metrics`, `register` (applying the
generated admission configuration), `certs`, `launch` (start `serve` as a child), `cli`. See
docs/webhook.md.
"""
