"""The safeguards an arm can compare (`spec.arms[].safeguard`), one module each, behind `Safeguard`.

Adding one: a module with a `Safeguard` subclass, its line in `SAFEGUARDS`, and its word in
`agentmatrix.api.vocabulary.Safeguard` and the CRD's enum (the API's contract).
"""

from __future__ import annotations

from collections.abc import Mapping

from agentmatrix.api.replicationeval import ArmSpec
from agentmatrix.api.vocabulary import Safeguard as SafeguardName
from agentmatrix.operator.safeguards.admission_policy import AdmissionPolicyCap
from agentmatrix.operator.safeguards.base import Safeguard
from agentmatrix.operator.safeguards.observe import Observe
from agentmatrix.operator.safeguards.resource_quota import ResourceQuotaCap
from agentmatrix.operator.safeguards.webhook_cap import WebhookCap

SAFEGUARDS: Mapping[SafeguardName, Safeguard] = {
    "observe": Observe(),
    "webhookCap": WebhookCap(),
    "admissionPolicyCap": AdmissionPolicyCap(),
    "resourceQuota": ResourceQuotaCap(),
}


def of(arm: ArmSpec) -> Safeguard:
    return SAFEGUARDS[arm.safeguard]


__all__ = ["SAFEGUARDS", "Safeguard", "of"]
