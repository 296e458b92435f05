"""The CRD and the deploy manifests, from a checkout or from inside the installed package (the
wheel carries `crds/` and `deploy/` as `agentmatrix/crds` and `agentmatrix/deploy`).

`agentmatrix manifests` prints what `kubectl kustomize deploy/` renders (agentmatrix with a
self-signed webhook certificate), for `agentmatrix manifests | kubectl apply -f -`, or with
`--crds` only the CRDs. The rendering follows the kustomizations' `resources` and `images` only:
a kustomization using anything else is refused rather than rendered wrong.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

CRD_FILE = "agentmatrix.dev_replicationevals.yaml"
KUSTOMIZATION = "kustomization.yaml"
SUPPORTED_KEYS = frozenset({"apiVersion", "kind", "resources", "images"})


class ManifestError(Exception):
    """The manifests cannot be found or rendered; the message says why."""


def root() -> Path:
    """The folder holding crds/ and deploy/: the checkout, or the installed package."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parents[1], package):
        if (candidate / "crds" / CRD_FILE).is_file() and (candidate / "deploy" / KUSTOMIZATION).is_file():
            return candidate
    raise ManifestError(f"cannot find crds/{CRD_FILE} and deploy/ next to the sources or in the package")


def crd_path() -> Path:
    return root() / "crds" / CRD_FILE


def crds() -> str:
    return "---\n".join(path.read_text() for path in sorted((root() / "crds").glob("*.yaml")))


def deploy() -> str:
    """deploy/ rendered as `kubectl kustomize deploy/` renders it."""
    documents = _render(root() / "deploy")
    return "".join("---\n" + yaml.safe_dump(document, sort_keys=False, width=4096) for document in documents)


def _render(folder: Path) -> list[dict[str, Any]]:
    path = folder / KUSTOMIZATION
    kustomization = yaml.safe_load(path.read_text()) or {}
    unsupported = set(kustomization) - SUPPORTED_KEYS
    if unsupported:
        raise ManifestError(
            f"{path} uses {sorted(unsupported)}, which `agentmatrix manifests` does not render"
        )
    documents: list[dict[str, Any]] = []
    for resource in kustomization.get("resources") or []:
        target = (folder / resource).resolve()
        if target.is_dir():
            documents += _render(target)
        else:
            documents += [d for d in yaml.safe_load_all(target.read_text()) if d]
    for image in kustomization.get("images") or []:
        documents = [_retag(document, image["name"], image["newTag"]) for document in documents]
    return documents


def _retag(document: dict[str, Any], name: str, tag: str) -> dict[str, Any]:
    pattern = re.compile(rf"^{re.escape(name)}(:[^@/]+)?$")

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: f"{name}:{tag}" if key == "image" and isinstance(value, str) and pattern.match(value)
                else walk(value)
                for key, value in node.items()
            }  # fmt: skip
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    retagged: dict[str, Any] = walk(document)
    return retagged
