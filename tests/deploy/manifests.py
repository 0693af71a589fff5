"""The deploy files read as data: the k8s StatefulSet's and the compose file's command lines.

Shared by the static checks (``test_static.py``) and the test bed runs of those exact command
lines (``tests/testbed/test_deploy_on_bed.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s" / "rsbroker.yaml"


def k8s_documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(K8S.read_text()) if doc]


def statefulset() -> dict[str, Any]:
    return next(d for d in k8s_documents() if d["kind"] == "StatefulSet")


def image_env() -> dict[str, str]:
    """The ``ENV`` of the Dockerfile's final stage (``KEY=value`` pairs, continued lines)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    final = text.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line[4:].split())  # type: ignore[arg-type]
    return env


def pod_command(pod: str) -> tuple[list[str], dict[str, str]]:
    """The StatefulSet container's arguments and environment for pod ``pod``, with
    ``$(POD_NAME)`` expanded as the kubelet does (values from the downward API)."""
    container = statefulset()["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container, "the image's entrypoint runs: one command line for every pod"
    expand = lambda text: re.sub(r"\$\(POD_NAME\)", pod, text)  # noqa: E731
    env = {e["name"]: expand(e["value"]) for e in container.get("env", []) if "value" in e}
    env["POD_NAME"] = pod
    return [expand(a) for a in container["args"]], env


def compose_command(service: str) -> tuple[list[str], dict[str, str]]:
    """A compose service's ``command`` and ``environment`` (anchors and merges resolved)."""
    spec = yaml.safe_load(COMPOSE.read_text())["services"][service]
    return list(spec["command"]), {k: str(v) for k, v in spec["environment"].items()}
