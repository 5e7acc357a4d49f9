"""The client address rule behind trusted proxies (SPEC §9), and its settings."""

from __future__ import annotations

import pytest

from callroom.config import load_settings
from callroom.errors import ConfigError
from callroom.server.proxies import (
    client_address,
    forwarded_for,
    parse_address,
    parse_networks,
    x_forwarded_for,
)

LB = parse_networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("203.0.113.7:4711", "203.0.113.7"),
        ('"[2001:db8::1]:4711"', "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:198.51.100.2", "198.51.100.2"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("999.1.1.1", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    address = parse_address(text)
    assert (None if address is None else str(address)) == expected


def test_forwarded_for_reads_every_element_in_order() -> None:
    values = ['for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711"', "by=x"]
    assert forwarded_for(values) == ["192.0.2.60", '"[2001:db8:cafe::17]:4711"', "unknown"]


def test_x_forwarded_for_joins_header_lines() -> None:
    assert x_forwarded_for(["1.1.1.1, 2.2.2.2", "3.3.3.3"]) == ["1.1.1.1", " 2.2.2.2", "3.3.3.3"]


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert client_address("198.51.100.9", LB, x_forwarded=["1.2.3.4"]) == "198.51.100.9"
    assert client_address("198.51.100.9", (), forwarded=["for=1.2.3.4"]) == "198.51.100.9"


def test_a_trusted_peer_without_headers_is_the_client() -> None:
    assert client_address("10.0.0.5", LB) == "10.0.0.5"


def test_the_right_most_untrusted_address_is_the_client() -> None:
    # The client forged 6.6.6.6 on the left; the proxies appended what they saw.
    chain = ["6.6.6.6, 203.0.113.7, 10.1.1.1"]
    assert client_address("10.0.0.5", LB, x_forwarded=chain) == "203.0.113.7"


def test_every_hop_trusted_gives_the_left_most() -> None:
    assert client_address("10.0.0.5", LB, x_forwarded=["10.9.9.9, 10.1.1.1"]) == "10.9.9.9"


def test_a_garbage_entry_ends_the_walk_at_the_nearest_known_address() -> None:
    assert client_address("10.0.0.5", LB, x_forwarded=["garbage, 10.1.1.1"]) == "10.1.1.1"
    assert client_address("10.0.0.5", LB, forwarded=["for=unknown"]) == "10.0.0.5"


def test_forwarded_wins_over_x_forwarded_for() -> None:
    got = client_address(
        "10.0.0.5", LB, forwarded=['for="[2001:db8::9]"'], x_forwarded=["203.0.113.7"]
    )
    assert got == "2001:db8::9"


def test_ipv6_proxies_and_mapped_peers() -> None:
    assert client_address("fd00::1", LB, x_forwarded=["203.0.113.7"]) == "203.0.113.7"
    assert client_address("::ffff:10.0.0.5", LB, x_forwarded=["203.0.113.7"]) == "203.0.113.7"


def test_no_peer_or_a_unix_socket() -> None:
    assert client_address(None, LB) == "unknown"
    assert client_address("/run/callroom.sock", LB) == "/run/callroom.sock"


def test_a_long_chain_is_cut_to_the_last_hops() -> None:
    chain = ["203.0.113.7, " + ", ".join(["10.0.0.1"] * 100)]
    # Only the last 32 hops are read: all trusted, so the left-most of them.
    assert client_address("10.0.0.5", LB, x_forwarded=chain) == "10.0.0.1"


def test_trusted_proxies_setting_parses_cidrs() -> None:
    settings = load_settings(None, DEV_MODE=True, TRUSTED_PROXIES="10.0.0.0/8, 192.168.1.1")
    assert settings.TRUSTED_PROXIES == ("10.0.0.0/8", "192.168.1.1")
    assert load_settings(None, DEV_MODE=True).TRUSTED_PROXIES == ()


@pytest.mark.parametrize("value", ["10.0.0.0/33", "not-a-cidr", "10.0.0.0/8,nope"])
def test_a_bad_trusted_proxies_value_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, DEV_MODE=True, TRUSTED_PROXIES=value)
    assert "TRUSTED_PROXIES" in str(caught.value)


def test_redis_prefix_default_and_bad_values() -> None:
    assert load_settings(None, DEV_MODE=True).REDIS_PREFIX == "callroom"
    assert load_settings(None, DEV_MODE=True, REDIS_PREFIX="team-a.prod").REDIS_PREFIX == (
        "team-a.prod"
    )
    for bad in ("a{b}", "has space", "x" * 65):
        with pytest.raises(ConfigError) as caught:
            load_settings(None, DEV_MODE=True, REDIS_PREFIX=bad)
        assert "REDIS_PREFIX" in str(caught.value)
