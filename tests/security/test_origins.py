"""Host and Origin parsing (``broker.origins``): headers from the network, so Hypothesis too.

The parsers take any text a client sends and never raise; a name the node does not have is
never taken for one of its own, whatever its case, port or trailing dot.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker.origins import NodeNames, OriginPolicy, host_of, normalise_origin, origin_authority
from broker.settings import Settings

NAMES = NodeNames({"localhost", "127.0.0.1", "::1", "broker-0.peers"}, allowed=["ops.example"])
POLICY = OriginPolicy(NAMES, ["https://app.example", "http://localhost:3000"])
label = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)


def test_host_of_strips_ports_brackets_case_and_the_root_dot() -> None:
    assert host_of("Broker-0.Peers.:7002") == "broker-0.peers"
    assert host_of("[::1]:7002") == "::1"
    assert host_of("[::1]") == "::1"
    assert host_of("127.0.0.1") == "127.0.0.1"


def test_origin_authority_and_normal_form() -> None:
    assert origin_authority("https://App.Example") == ("https", "app.example", 443)
    assert origin_authority("http://[::1]:8080") == ("http", "::1", 8080)
    assert origin_authority("null") is None
    assert origin_authority("file://") is None
    assert normalise_origin("HTTPS://App.Example:443") == "https://app.example"
    assert normalise_origin("http://[::1]:8080") == "http://[::1]:8080"


def test_node_names_include_listener_and_advertise_hosts_but_not_wildcards() -> None:
    names = NodeNames.of(Settings(tcp="0.0.0.0:7000", admin="10.1.2.3:7002", advertise="rsbroker-0.peers:7000"))
    assert names.knows("10.1.2.3") and names.knows("rsbroker-0.peers") and names.knows("localhost")
    assert not names.knows("0.0.0.0")
    assert names.knows("192.0.2.7", local_address="192.0.2.7")  # the address the request came to
    assert not names.knows("192.0.2.7", local_address="192.0.2.8")


def test_origin_policy() -> None:
    assert POLICY.refusal(None, None) == ""
    assert POLICY.refusal("https://app.example", None) == ""
    assert POLICY.refusal("http://localhost:3000", None) == ""
    assert POLICY.refusal("http://127.0.0.1:9999", None) == ""  # a page this host serves
    assert POLICY.refusal("https://app.example:8443", None) != ""  # listed origins are exact
    assert "--ws-allowed-origins" in POLICY.refusal("https://evil.example", None)
    assert POLICY.refusal("null", None) != ""
    assert OriginPolicy(NAMES, ["*"]).refusal("https://evil.example", None) == ""


@given(st.text(max_size=300))
def test_parsers_never_raise_on_any_header(text: str) -> None:
    host_of(text)
    normalise_origin(text)
    origin_authority(text)
    POLICY.refusal(text, "127.0.0.1")
    NAMES.knows(host_of(text), "127.0.0.1")


@given(label, st.sampled_from(["http", "https", "ws"]), st.one_of(st.none(), st.integers(1, 65535)), st.booleans())
def test_a_foreign_name_is_never_one_of_ours(name: str, scheme: str, port: int | None, upper: bool) -> None:
    host = f"{name}.attacker.test"
    shown = host.upper() if upper else host
    authority = shown + (f":{port}" if port else "")
    assert not NAMES.knows(host_of(authority), "127.0.0.1")
    assert POLICY.refusal(f"{scheme}://{authority}", "127.0.0.1") != ""
