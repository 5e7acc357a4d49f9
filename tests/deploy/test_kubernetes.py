"""devops/kubernetes (kustomize base): every manifest valid against the Kubernetes JSON
schemas offline (kubernetes-validate --strict), the base listing every manifest, and the
manifests consistent with the settings model, the image and each other (issue 15)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from deploy_support import (
    KUBERNETES,
    env_example_names,
    load_yaml,
    load_yaml_all,
    run,
    settings_fields,
    stages,
    the,
    tool,
)

KUSTOMIZATION = KUBERNETES / "kustomization.yaml"
SECRET_EXAMPLE = KUBERNETES / "secret.example.yaml"


def manifests() -> list[Path]:
    """Every Kubernetes resource file (the kustomization itself is not one)."""
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p != KUSTOMIZATION)


def validate(*paths: Path) -> tuple[int, str]:
    result = run(tool("kubernetes-validate"), "--strict", *map(str, paths))
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    """Every resource of the base and the Secret example, by kind."""
    by_kind: dict[str, dict[str, Any]] = {}
    for path in manifests():
        for doc in load_yaml_all(path):
            assert doc["kind"] not in by_kind, f"one {doc['kind']} only ({path.name})"
            by_kind[doc["kind"]] = doc
    return by_kind


def pod_spec(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = resources["Deployment"]["spec"]["template"]["spec"]
    return spec


def container(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = pod_spec(resources)["containers"]
    result: dict[str, Any] = only
    return result


def pod_labels(resources: dict[str, dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = resources["Deployment"]["spec"]["template"]["metadata"]["labels"]
    return labels


def settings_values(resources: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {**resources["ConfigMap"]["data"], **resources["Secret"]["stringData"]}


def test_every_manifest_is_valid_offline_and_strict() -> None:
    code, output = validate(*manifests())
    assert code == 0, output
    assert "WARN" not in output, output  # e.g. a kind without a schema is only a warning
    documents = sum(len(load_yaml_all(path)) for path in manifests())
    assert output.count(" passed for resource ") == documents, output


def test_the_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    """Control: --strict refuses a misspelt field (a pod-level typo here)."""
    broken = tmp_path / "deployment.yaml"
    text = (KUBERNETES / "deployment.yaml").read_text()
    broken.write_text(text.replace("terminationGracePeriodSeconds", "terminationGraceSeconds"))
    code, output = validate(broken)
    assert code != 0
    assert "terminationGraceSeconds" in output, output


def test_the_base_lists_every_manifest_but_the_secret_example() -> None:
    """The Secret is the operator's (secret.example.yaml says how); every other file
    is in the base, and every listed file exists."""
    listed = load_yaml(KUSTOMIZATION)["resources"]
    expected = sorted(p.name for p in manifests() if p != SECRET_EXAMPLE)
    assert sorted(listed) == expected
    assert load_yaml(KUSTOMIZATION)["kind"] == "Kustomization"


def test_configmap_and_secret_hold_every_setting_and_nothing_else(
    resources: dict[str, dict[str, Any]],
) -> None:
    config = set(resources["ConfigMap"]["data"])
    secret = set(resources["Secret"]["stringData"])
    assert not config & secret
    assert config <= settings_fields()
    assert {"TRUSTED_PROXIES", "REDIS_PREFIX", "HANDSHAKE_TIMEOUT_SECONDS"} <= config
    assert secret <= settings_fields()
    assert settings_fields() | env_example_names() <= config | secret
    # Credentials only in the Secret.
    assert secret == {"DATABASE_URL", "REDIS_URL", "TURN_SECRET"}


def test_configmap_and_secret_make_valid_settings(
    resources: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The values as the pod gets them (envFrom: environment variables, empty ones
    ignored) start a server: the settings model accepts them."""
    from callroom.config import Settings

    for name in settings_fields():
        monkeypatch.delenv(name, raising=False)
    for name, value in settings_values(resources).items():
        assert isinstance(value, str), name  # a ConfigMap holds strings only
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.REDIS_URL
    assert settings.DATABASE_URL.startswith("postgresql://")
    assert settings.PORT == 8080
    for cidr in resources["ConfigMap"]["data"]["TRUSTED_PROXIES"].split(","):
        ipaddress.ip_network(cidr.strip())


def test_pods_read_the_configmap_and_the_secret(resources: dict[str, dict[str, Any]]) -> None:
    sources = container(resources)["envFrom"]
    assert {"configMapRef": {"name": resources["ConfigMap"]["metadata"]["name"]}} in sources
    assert {"secretRef": {"name": resources["Secret"]["metadata"]["name"]}} in sources
    assert pod_spec(resources)["enableServiceLinks"] is False  # no stray *_PORT variables


def test_probes_and_port_match_the_server(resources: dict[str, dict[str, Any]]) -> None:
    main = container(resources)
    port = int(resources["ConfigMap"]["data"]["PORT"])
    (http,) = main["ports"]
    assert http["containerPort"] == port == 8080
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": http["name"]}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": http["name"]}
    assert main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": http["name"]}
    annotations = resources["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_grace_period_outlasts_prestop_and_shutdown_grace(
    resources: dict[str, dict[str, Any]],
) -> None:
    """SPEC §8: the kubelet's SIGKILL must not cut the drain short."""
    command = container(resources)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    shutdown = float(resources["ConfigMap"]["data"]["SHUTDOWN_GRACE_SECONDS"])
    assert pod_spec(resources)["terminationGracePeriodSeconds"] > pre_stop + shutdown


def test_non_root_read_only_and_bounded(resources: dict[str, dict[str, Any]]) -> None:
    pod = pod_spec(resources)
    main = container(resources)
    image_uid = int(the("USER", stages()[-1]).split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_uid
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {mount["mountPath"] for mount in main["volumeMounts"]}
    assert mounts == {"/tmp", *json.loads(the("VOLUME", stages()[-1]))}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(main["resources"][kind]), kind


def test_service_ingress_hpa_pdb_and_policy_point_at_the_pods(
    resources: dict[str, dict[str, Any]],
) -> None:
    labels = pod_labels(resources)
    selector = resources["Deployment"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    port_name = container(resources)["ports"][0]["name"]

    service = resources["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["sessionAffinity"] == "None"  # SPEC §7: no stickiness
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port_name

    ingress = resources["Ingress"]
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": service_port["name"]},
    }
    assert ingress["spec"]["tls"][0]["hosts"] == [rule["host"]]  # wss only
    annotations = ingress["metadata"]["annotations"]
    heartbeat = float(resources["ConfigMap"]["data"]["HEARTBEAT_INTERVAL_SECONDS"])
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert float(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) > 2 * heartbeat

    hpa = resources["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == resources["Deployment"]["metadata"]["name"]
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    pdb = resources["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()

    policy = resources["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert [port["port"] for rule in policy["ingress"] for port in rule["ports"]] == [port_name]
    egress = {port["port"] for rule in policy["egress"] for port in rule["ports"]}
    assert {53, 443, 5432, 6379} <= egress  # DNS, JWKS, PostgreSQL, Redis
