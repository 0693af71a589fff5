"""Which hot path runs, and that the relay's stream maps hold on each of them.

CI must never pass on a silently failed build: with ``CI=true`` and no
``RSBROKER_NO_EXTENSIONS``, the compiled module has to be the one loaded. The stream-map
model (tests/relay/test_stream_map_model.py) is run here once per implementation, so both
relay the same way in one run; the Hypothesis parser tests do the same for the readers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import ModuleType

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from broker import hotpath, session
from tests.relay.test_parsers_fuzz import HOT_PATHS
from tests.relay.test_stream_map_model import StreamMaps


def _loaded(extra_env: dict[str, str], drop: tuple[str, ...] = ()) -> str:
    """``COMPILED module`` as a fresh interpreter with this environment sees them."""
    env = {k: v for k, v in os.environ.items() if k not in drop} | extra_env
    code = "import broker.hotpath as h; print(h.COMPILED, h.relay_frame.__module__)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_extension_is_loaded_in_ci() -> None:
    if os.environ.get("CI", "").lower() != "true":
        pytest.skip("only CI (CI=true) requires the compiled hot path; a local install may lack a compiler")
    if hotpath.NO_EXTENSIONS:
        pytest.skip("RSBROKER_NO_EXTENSIONS is set: this pass tests the pure-Python hot path")
    assert hotpath.COMPILED, "CI runs without the compiled hot path: the build of broker/_hotpath_c.pyx failed (see pip's warning)"


def test_no_extensions_forces_pure_python() -> None:
    assert _loaded({"RSBROKER_NO_EXTENSIONS": "1"}) == "False broker._hotpath"


@pytest.mark.skipif(len(HOT_PATHS) < 2, reason="the compiled hot path is not built here")
def test_compiled_is_the_default_when_built() -> None:
    assert _loaded({}, drop=("RSBROKER_NO_EXTENSIONS",)) == "True broker._hotpath_c"
    assert _loaded({"RSBROKER_NO_EXTENSIONS": "0"}) == "True broker._hotpath_c"


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_stream_maps_hold_on_each_hot_path(hot: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dict-model state machine, with the sessions relaying through ``hot``."""
    monkeypatch.setattr(session, "relay_frame", hot.relay_frame)
    monkeypatch.setattr(session, "request_metadata", hot.request_metadata)
    run_state_machine_as_test(StreamMaps, settings=settings(max_examples=30, stateful_step_count=40, deadline=None))
