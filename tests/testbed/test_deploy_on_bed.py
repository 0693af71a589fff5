"""The exact command lines and environments of deploy/ run on the test bed.

Each host plays a pod (``rsbroker-0`` reachable as ``rsbroker-0.rsbroker-peers``, as the
headless Service names it) or a compose service (``n1``); the image's ``ENV`` comes from the
Dockerfile; only file paths are mapped to the bed's own keys and data directories. The cluster
must form, every node must become ready, and the first node must come back with its command
line unchanged after a SIGTERM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy.manifests import compose_command, image_env, pod_command
from tests.support.admin import wait_for
from tests.support.netns import Host
from tests.testbed.views import wait_converged

pytestmark = pytest.mark.timeout(300)


def _command(kind: str, host: Host) -> tuple[list[str], dict[str, str]]:
    argv, env = pod_command(host.name) if kind == "k8s" else compose_command(host.name)
    env = {**image_env(), **env}
    paths = {
        "/etc/rsbroker/cluster.key": str(host.bed.cluster_key),
        "/run/secrets/cluster_key": str(host.bed.cluster_key),
        "/etc/rsbroker-jwt/jwt-public.pem": str(host.bed.jwt_public),
        "/run/secrets/jwt_public_key": str(host.bed.jwt_public),
        "/var/lib/rsbroker": str(host.data_dir),
    }

    def mapped(text: str) -> str:
        for path, local in paths.items():
            text = text.replace(path, local)
        return text

    return ["serve", *(mapped(a) for a in argv)], {k: mapped(v) for k, v in env.items()}


@pytest.mark.parametrize("kind", ["k8s", "compose"])
async def test_the_deploy_command_lines_form_a_cluster_that_survives_restarting_its_first_node(
    hosts: Callable[..., list[Host]], kind: str
) -> None:
    options: dict[str, Any] = (
        {"names": ["rsbroker-0", "rsbroker-1", "rsbroker-2"], "domain": "rsbroker-peers"}
        if kind == "k8s" else {"names": ["n1", "n2", "n3"]}
    )  # fmt: skip
    group = hosts(3, **options)
    for host in group:
        host.start(*_command(kind, host))
    await wait_converged(group)
    await wait_for(lambda: all(h.http("GET", "/health/ready", token=False)[0] == 200 for h in group),
                   timeout=60, interval=0.5, message="every node ready")
    first = group[0]
    assert first.stop() == 0
    first.start(*_command(kind, first))
    await wait_converged(group)
