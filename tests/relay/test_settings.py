"""Settings: defaults < ``--config`` TOML < ``RSBROKER_*`` environment < flags, and
refusals that exit 2 naming the setting. Checked on real ``rsbroker serve`` processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.admin import get_json
from tests.support.brokerproc import BrokerFactory, run_rsbroker


async def test_precedence(broker_factory: BrokerFactory) -> None:
    config = """
setup_timeout_s = 7
max_pending_bytes = 111111
max-streams = 5
max_connections_per_source = 50
"""
    env = {"RSBROKER_MAX_PENDING_BYTES": "222222", "RSBROKER_MAX_STREAMS": "6", "RSBROKER_MAX_CONNECTIONS_PER_SOURCE": "60"}
    node = broker_factory.start("--max-streams", "7", config=config, env=env)
    status, body = await get_json(node.admin, "/api/v1/node")
    assert status == 200
    assert body["limits"] == {
        "max_frame_size": 0xFFFFFF,  # default
        "setup_timeout_s": 7,  # TOML over the default
        "max_pending_bytes": 222222,  # environment over TOML
        "max_connections_per_source": 60,  # environment over TOML
        "max_streams": 7,  # flag over environment over TOML
    }


async def test_config_file_named_by_the_environment(broker_factory: BrokerFactory) -> None:
    path = broker_factory.tmpdir() / "node.toml"
    path.write_text('node_id = "from-file"\nmax_frame_size = 4096\n')
    node = broker_factory.start(node_id="from-flag", env={"RSBROKER_CONFIG": str(path)})
    status, body = await get_json(node.admin, "/api/v1/node")
    assert body["node_id"] == "from-flag" and body["limits"]["max_frame_size"] == 4096


@pytest.mark.parametrize(
    ("args", "env", "config", "named"),
    [
        (["--max-frame-size", "10"], {}, None, "max_frame_size must be from 64"),
        (["--tcp", "nowhere"], {}, None, "--tcp: expected HOST:PORT, got 'nowhere'"),
        ([], {"RSBROKER_MAX_STREAMS": "many"}, None, "RSBROKER_MAX_STREAMS: 'many' is not a number"),
        ([], {"RSBROKER_DEFAULT_POLICY": "fastest"}, None, "default_policy must be one of"),
        ([], {}, "colour = 1\n", "unknown setting 'colour'"),
        ([], {}, '[services."svc"]\npolicy = "fastest"\n', "services.svc: unknown load-balancing policy 'fastest'"),
        ([], {}, "max_streams = [\n", "--config"),
        (["--max-service-name-bytes", "300"], {}, None, "max_service_name_bytes may be at most 255: gossip packets"),
        ([], {"RSBROKER_MAX_FRAGMENTS": "0"}, None, "max_fragments must be positive"),
        ([], {}, "reassembly_timeout_s = -1\n", "reassembly_timeout_s must be positive"),
        # the gossip profiles are cluster's to name: checked by the composition root, every door
        (["--gossip-profile", "lna"], {}, None, "gossip_profile must be one of failover, lan, local, wan"),
        ([], {"RSBROKER_GOSSIP_PROFILE": "lna"}, None, "gossip_profile must be one of failover, lan, local, wan"),
        ([], {}, 'gossip_profile = "lna"\n', "gossip_profile must be one of failover, lan, local, wan"),
    ],
    ids=[
        "flag-range", "flag-address", "env-number", "env-policy", "toml-unknown", "toml-service-policy", "toml-syntax",
        "flag-name-ceiling", "env-limit", "toml-limit", "flag-gossip-profile", "env-gossip-profile", "toml-gossip-profile",
    ],  # fmt: skip
)
def test_invalid_settings_exit_2_naming_the_setting(
    tmp_path: Path, args: list[str], env: dict[str, str], config: str | None, named: str
) -> None:
    extra = []
    if config is not None:
        path = tmp_path / "bad.toml"
        path.write_text(config)
        extra = ["--config", str(path)]
    result = run_rsbroker("serve", "--tcp", "127.0.0.1:0", *extra, *args, env=env)
    assert result.returncode == 2, result
    assert named in result.stderr, result.stderr
    assert "rsbroker ready" not in result.stdout


def test_limit_flags_explain_themselves() -> None:
    """Every client-port limit has an argparse help text, not just its default."""
    result = run_rsbroker("serve", "--help")
    assert result.returncode == 0, result
    text = " ".join(result.stdout.split())
    assert "--max-reassembly-bytes N bytes of unfinished fragmented requests one connection" in text
    assert "--max-service-name-bytes N longest service name, UTF-8 bytes (at most 255" in text
