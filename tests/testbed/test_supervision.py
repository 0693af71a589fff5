"""§5 of issue 12: nothing dies silently; a full disk says "storage full".

The node's data directory is a tiny tmpfs mounted inside its host (``ip netns exec`` gives the
process a private mount namespace, so the mount vanishes with it). Config writes fill it; the
Raft loop's ENOSPC used to leave a zombie that reported ready and timed every write out.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.support.netns import Host

MOUNT_THEN_SERVE = 'mount -t tmpfs -o size=192k rsbroker-full "$0" && exec "$@"'


async def test_a_full_disk_fails_writes_health_and_metrics_with_storage_full(hosts: Callable[[int], list[Host]]) -> None:
    (node1,) = hosts(1)
    node1.data_dir.mkdir(parents=True)
    node1.start(["sh", "-c", MOUNT_THEN_SERVE, str(node1.data_dir), *node1.rsbroker(node1.serve_args())], raw=True)
    assert node1.http("GET", "/health/live", token=False)[0] == 200
    value = {"blob": "x" * 16_000}
    answers = []
    for i in range(40):
        status, body = node1.http("PUT", f"/api/v1/config/app/fill{i}", value)
        answers.append(status)
        if status != 200:
            break
    assert answers[-1] == 507 and "storage full" in body["error"], (answers, body)

    status, body = node1.http("PUT", "/api/v1/config/app/after", {"small": 1})
    assert status == 507 and "storage full" in body["error"], (status, body)
    status, body = node1.http("GET", "/health/live", token=False)
    assert status == 503 and "storage full" in body["reason"], body
    status, body = node1.http("GET", "/health/ready", token=False)
    assert status == 503 and "storage full" in body["reason"], body
    status, metrics = node1.http("GET", "/metrics")
    assert status == 200 and "rsbroker_storage_full 1.0" in metrics, metrics
    assert 'rsbroker_background_task_failed{task="raft loop"} 1.0' in metrics, metrics
    output = node1.process.output()  # type: ignore[union-attr]
    assert output.count("background task 'raft loop' failed") == 1, output  # logged once, with its cause
