"""The admission webhook: a complete ledger of replication attempts, and caps that hold.

Modules: `review` (AdmissionReview v1 in and out), `counting` (what an object runs), `model`
(actors, policies, observations), `state` and `feed` (what the cluster looks like, kept in
memory by watches), `admission` (the decision), `ledger` (the durable record and its readers),
`server` (HTTPS, metrics), `config` and `register` (the generated admission configuration),
`coverage` (effective changes the ledger missed), `cli`. See docs/webhook.md.
"""
