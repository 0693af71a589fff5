"""The node's task supervisor: a background loop that dies is noticed, named and logged once."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from broker.supervisor import Supervisor, describe_failure, is_storage_full


async def _crash(exc: BaseException) -> None:
    await asyncio.sleep(0)
    raise exc


async def test_a_task_that_raises_is_a_failure_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor()
    task = supervisor.spawn("gossip timer", _crash(ValueError("boom")))
    await asyncio.gather(task, return_exceptions=True)
    supervisor.watch("gossip timer", asyncio.ensure_future(_crash(ValueError("again"))))
    await asyncio.sleep(0.01)
    assert supervisor.failures == {"gossip timer": "ValueError: boom"}
    assert not supervisor.healthy
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1


async def test_cancelled_tasks_and_finished_jobs_are_no_failure() -> None:
    supervisor = Supervisor()
    forever = supervisor.spawn("raft loop", asyncio.sleep(3600))
    done_job = supervisor.spawn("join", asyncio.sleep(0), forever=False)
    forever.cancel()
    await asyncio.gather(forever, done_job, return_exceptions=True)
    assert supervisor.healthy


async def test_a_loop_that_returns_is_a_failure() -> None:
    supervisor = Supervisor()
    await supervisor.spawn("link keepalive", asyncio.sleep(0))
    await asyncio.sleep(0)
    assert "should run until the node stops" in supervisor.failures["link keepalive"]


async def test_a_task_ending_while_the_node_stops_is_no_failure() -> None:
    supervisor = Supervisor()
    task = supervisor.spawn("gossip timer", _crash(RuntimeError("socket closed under us")))
    supervisor.stopping()
    await asyncio.gather(task, return_exceptions=True)
    assert supervisor.healthy


def test_a_full_disk_is_named_storage_full_even_when_wrapped() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise full
        except OSError as exc:
            raise RuntimeError("raft loop failed") from exc
    except RuntimeError as wrapped:
        assert is_storage_full(wrapped)
        assert describe_failure(wrapped).startswith("storage full")
    assert not is_storage_full(OSError(errno.EACCES, "Permission denied"))
