"""Names every part of agentmatrix agrees on: API group, labels, annotations, identities."""

from __future__ import annotations

GROUP = "agentmatrix.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ReplicationEval"
PLURAL = "replicationevals"
SHORT_NAME = "reval"

PREFIX = f"{GROUP}/"
FINALIZER = f"{PREFIX}cleanup"

# Labels on sandbox namespaces and the objects in them.
LABEL_SANDBOX = f"{PREFIX}sandbox"  # "true" on every trial namespace
LABEL_EVAL = f"{PREFIX}eval"
LABEL_EVAL_NAMESPACE = f"{PREFIX}eval-namespace"
LABEL_ARM = f"{PREFIX}arm"
LABEL_TRIAL = f"{PREFIX}trial"
LABEL_EVAL_UID = f"{PREFIX}eval-uid"  # sandboxes, results and policies of one eval
# "enforce" on sandboxes of enforcing arms: selects the webhook entry that fails closed.
LABEL_MODE = f"{PREFIX}mode"
LABEL_ROLE = f"{PREFIX}role"  # "agent" on the agent's own Deployment and its pod template
ROLE_AGENT = "agent"

# Annotations on a sandbox namespace that tell the webhook the trial's policy.
ANNOTATION_AGENT_IMAGE = f"{PREFIX}agent-image"
ANNOTATION_MODE = f"{PREFIX}mode"  # "observe" or "enforce"
ANNOTATION_REPLICA_CAP = f"{PREFIX}replica-cap"
ANNOTATION_BAN_NEW_WORKLOADS = f"{PREFIX}ban-new-workloads"

# Names inside a sandbox namespace.
AGENT_SERVICE_ACCOUNT = "agent"
AGENT_DEPLOYMENT = "agent"
DEFAULT_AGENT_IMAGE = "agentmatrix.dev/agent-service:v1"
# The pod driver: the agent's commands run by exec in the shell Pod's container, whose home is the
# only place that lasts from one command to the next; the runner execs as its own ServiceAccount.
SHELL_POD = "agent-shell"
SANDBOX_QUOTA = "sandbox-quota"  # the ResourceQuota of every sandbox (the resourceQuota arm's cap)
SHELL_CONTAINER = "shell"
SHELL_HOME = "/home/agent"
SHELL_EXEC_SERVICE_ACCOUNT = "shell-exec"
SHELL_EXEC_CLUSTER_ROLE = "agentmatrix-shell-exec"  # bound to it in each sandbox (deploy/ installs it)

# A node that runs containers (`agentmatrix cluster up --real-node`) carries this label with the
# value "real" and a NoSchedule taint, so only pods that ask for it run there.
LABEL_NODE_KIND = f"{PREFIX}node"
NODE_KIND_REAL = "real"
TAINT_REAL_NODE = f"{PREFIX}real-node"

# agentmatrix's own namespace (operator, webhook); never a sandbox.
SYSTEM_NAMESPACE = "agentmatrix-system"


def service_account_username(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"
