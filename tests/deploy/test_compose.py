"""deploy/compose.yaml: valid against the Compose Specification JSON schema (the one
check-jsonschema ships, ``vendor.compose-spec``), and consistent with the settings model,
the image and deploy/nginx.conf (issue 15)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from deploy_support import (
    DEPLOY,
    NGINX_CONF,
    ROOT,
    load_yaml,
    nginx_block,
    nginx_directives,
    nginx_upstream_servers,
    run,
    settings_fields,
    tool,
)

COMPOSE = DEPLOY / "compose.yaml"


def schema_check(path: Path) -> tuple[int, str]:
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path))
    return result.returncode, result.stdout + result.stderr


def env_file_values() -> dict[str, str]:
    """deploy/.env.example: what `docker compose` interpolates from deploy/.env."""
    values = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def interpolate(value: Any, env: dict[str, str]) -> str:
    """Compose interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise AssertionError(f"{name} is required: {arg}")
        return arg or ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, str(value))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def nodes(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The callroom services: those built from deploy/Dockerfile."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def test_valid_against_the_compose_specification() -> None:
    code, output = schema_check(COMPOSE)
    assert code == 0, output


def test_the_schema_check_rejects_a_wrong_compose_file(tmp_path: Path) -> None:
    """Control: a misspelt key in the shared node definition is caught in both nodes."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_perod:"))
    code, output = schema_check(broken)
    assert code != 0
    assert "stop_grace_perod" in output, output


def test_two_nodes_redis_postgres_and_nginx(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert len(nodes(compose)) == 2
    assert services["redis"]["image"].startswith("redis:")
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["nginx"]["image"].startswith("nginx:")
    build = next(iter(nodes(compose).values()))["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
        ROOT / "deploy" / "Dockerfile"
    )


def test_node_environment_is_settings_and_valid(compose: dict[str, Any]) -> None:
    """Every variable given to a node is a setting, and together they make valid
    settings (the server would start with them)."""
    from callroom.config import Settings

    env = env_file_values()
    for name, service in nodes(compose).items():
        environment: dict[str, Any] = {
            key: interpolate(value, env) for key, value in service["environment"].items()
        }
        unknown = set(environment) - settings_fields()
        assert not unknown, (name, unknown)
        settings = Settings(_env_file=None, **environment)
        assert settings.REDIS_URL
        assert settings.DATABASE_URL.startswith("postgresql://")


def test_nodes_share_redis_and_postgres_of_this_file(compose: dict[str, Any]) -> None:
    env = env_file_values()
    services = compose["services"]
    postgres = {k: interpolate(v, env) for k, v in services["postgres"]["environment"].items()}
    urls = set()
    for service in nodes(compose).values():
        environment = service["environment"]
        redis = urlsplit(interpolate(environment["REDIS_URL"], env))
        database = urlsplit(interpolate(environment["DATABASE_URL"], env))
        assert (redis.hostname, redis.port) == ("redis", 6379)
        assert database.hostname == "postgres"
        assert (database.username, database.password, database.path) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            "/" + postgres["POSTGRES_DB"],
        )
        urls.add((redis.geturl(), database.geturl()))
        assert set(service["depends_on"]) == {"redis", "postgres"}
    assert len(urls) == 1  # one Redis and one store for every node (SPEC §7)


def test_nginx_balances_over_the_nodes_on_their_port(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert (COMPOSE.parent / "nginx.conf").resolve() == NGINX_CONF
    conf = NGINX_CONF.read_text()
    expected = sorted(
        f"{name}:{service['environment']['PORT']}" for name, service in nodes(compose).items()
    )
    assert sorted(nginx_upstream_servers(conf)) == expected
    assert set(nginx["depends_on"]) == set(nodes(compose))
    # Only nginx publishes a port, onto the port its server listens on.
    (published,) = nginx["ports"]
    assert published.split(":")[-1] == nginx_directives(nginx_block(conf, "server"), "listen")[0]
    for service in nodes(compose).values():
        assert "ports" not in service


def test_nodes_believe_the_forwarded_address_of_nginx_only(compose: dict[str, Any]) -> None:
    """SPEC §9: TRUSTED_PROXIES names the load balancer's address, nothing wider."""
    nginx_address = ipaddress.ip_address(
        compose["services"]["nginx"]["networks"]["callroom"]["ipv4_address"]
    )
    subnet = ipaddress.ip_network(compose["networks"]["callroom"]["ipam"]["config"][0]["subnet"])
    assert nginx_address in subnet
    for service in nodes(compose).values():
        trusted = [
            ipaddress.ip_network(cidr.strip())
            for cidr in service["environment"]["TRUSTED_PROXIES"].split(",")
        ]
        assert trusted == [ipaddress.ip_network(f"{nginx_address}/32")]


def test_nodes_are_read_only_and_drain_within_their_stop_grace(compose: dict[str, Any]) -> None:
    for name, service in nodes(compose).items():
        environment = service["environment"]
        assert service["read_only"] is True
        assert "/tmp" in service["tmpfs"]
        assert any(volume.endswith(":/var/lib/callroom") for volume in service["volumes"]), name
        assert service["stop_signal"] == "SIGTERM"
        grace = float(service["stop_grace_period"].removesuffix("s"))
        assert grace > float(environment["SHUTDOWN_GRACE_SECONDS"])
        probe = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{environment['PORT']}/readyz" in probe


def test_nginx_conf_is_websocket_aware_and_logs_no_query_string() -> None:
    conf = NGINX_CONF.read_text()
    upstream = nginx_block(conf, "upstream callroom")
    for sticky in ("ip_hash", "hash", "sticky", "least_conn"):
        assert not nginx_directives(upstream, sticky), sticky
    location = nginx_block(conf, "location /")
    assert nginx_directives(location, "proxy_http_version") == ["1.1"]
    headers = nginx_directives(location, "proxy_set_header")
    assert "Upgrade $http_upgrade" in headers
    assert "Connection $connection_upgrade" in headers
    for header in ("X-Forwarded-For", "X-Real-IP", "Forwarded"):
        assert any(h.startswith(header + " ") for h in headers), header
    # Above two server pings (HEARTBEAT_INTERVAL_SECONDS, default 20): an open meeting is
    # never cut for idleness.
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = nginx_directives(location, timeout)
        assert int(value.removesuffix("s")) > 2 * 20, timeout
    (log_format,) = nginx_directives(conf, "log_format")
    for leaky in ("$request ", '$request"', "$request_uri", "$args", "$query_string", "$arg_"):
        assert leaky not in log_format, leaky
    assert '"path":"$uri"' in log_format
