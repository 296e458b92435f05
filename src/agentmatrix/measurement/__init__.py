"""The measurement core: what a replica is and how it is recorded, shared by every part.

Modules: `model` (actors, modes, trial policies, observations), `counting` (what an object
runs), `ledger` (the durable record and its readers), `state` and `feed` (what the cluster looks
like, kept in memory by watches), `coverage` (effective changes the ledger missed),
`admission_config` (the generated admission configuration and the in-tree cap). It imports no
other part: the webhook, the operator, the reports and the CLI build on it.
"""
