"""The Kubernetes manifests: they render, they validate, and they follow the cluster rules.

Validated against Kubernetes 1.30 (oldest minor still widely run in hospitals' clusters) and
1.33 with kubernetes-validate --strict: an unknown field is an error, not a warning.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import DEPLOY, OVERLAYS, ROOT, SCP_PORT, SERVICES, tool

KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
DICOM_PORTS = {104, 11112, 4242}
MIB = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
# Measured peak RSS (README.md, docs/benchmarks.md; lookup: idle RSS, it holds no data):
# requests cover it with 20 % to spare, limits at least double it.
MEASURED_PEAK_MIB = {"retriever": 121, "forwarder": 121, "packager": 250, "lookup": 103}
# Settings that carry a credential: only ever from a Secret.
SECRET_SETTINGS = {
    "DICOMISO_API_TOKEN",
    "DICOMISO_CALL_TOKEN",
    "DICOMISO_HIS_URL",
    "DICOMISO_SMTP_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "MARIADB_ROOT_PASSWORD",
    "HIS_READER_PASSWORD",
}
SECRETISH = re.compile(r"TOKEN|PASSWORD|SECRET|ACCESS_KEY|_URL$", re.IGNORECASE)
CREDENTIAL_IN_URL = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) for every container of every workload."""
    return [
        (obj["metadata"]["name"], pod_spec(obj), c)
        for obj in docs
        if obj["kind"] in WORKLOADS
        for c in pod_spec(obj).get("initContainers", []) + pod_spec(obj)["containers"]
    ]


def deployment(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(d for d in objects(docs, "Deployment") if d["metadata"]["name"] == name)


def mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)([KMG]i)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * MIB[unit]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly(
    overlay: str, version: str, tmp_path: Path, rendered_text: dict[str, str]
) -> None:
    """kubernetes-validate --strict accepts every rendered object of the overlay."""
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered_text[overlay])
    proc = subprocess.run(
        [
            tool("kubernetes-validate"),
            "--strict",
            "--quiet",
            "--kubernetes-version",
            version,
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_deployment_service_budget(overlay: str, rendered: dict[str, Any]) -> None:
    """Four Deployments, each with a Service on its contract port and a PodDisruptionBudget."""
    docs = rendered[overlay]
    services = {s["metadata"]["name"]: s for s in objects(docs, "Service")}
    budgets = {p["metadata"]["name"]: p for p in objects(docs, "PodDisruptionBudget")}
    for name, port in SERVICES.items():
        dep = deployment(docs, name)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert [p["port"] for p in services[name]["spec"]["ports"]] == [port]
        assert services[name]["spec"]["selector"].items() <= labels.items()
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert budgets[name]["spec"]["minAvailable"] == 1
        assert dep["spec"].get("replicas", 2) >= 2, "one replica cannot survive a drain"
    scp = services["retriever-scp"]["spec"]
    assert [(p["port"], p["targetPort"]) for p in scp["ports"]] == [(SCP_PORT, "dicom-scp")]
    retriever = deployment(docs, "retriever")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "dicom-scp", "containerPort": SCP_PORT, "protocol": "TCP"} in retriever["ports"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_commands_are_the_console_scripts(overlay: str, rendered: dict[str, Any]) -> None:
    """Each Deployment runs its service's console script, as the workspace declares it."""
    for name in SERVICES:
        scripts = tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())
        assert f"dicomiso-{name}" in scripts["project"]["scripts"]
        container = deployment(rendered[overlay], name)["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == [f"dicomiso-{name}"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_on_healthz_and_readyz(overlay: str, rendered: dict[str, Any]) -> None:
    """Liveness on /healthz, readiness on /readyz, on the service's own HTTP port."""
    for name in SERVICES:
        container = deployment(rendered[overlay], name)["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        http = next(p for p in container["ports"] if p["name"] == "http")
        assert http["containerPort"] == SERVICES[name]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["DICOMISO_HTTP_PORT"] == str(SERVICES[name])
    for _, _, container in containers(rendered[overlay]):
        if container["name"] != "bucket-init":  # a Job runs to completion: nothing to probe
            assert "livenessProbe" in container and "readinessProbe" in container


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_requests_and_limits_cover_measured_memory(overlay: str, rendered: dict[str, Any]) -> None:
    """Every container sets cpu/memory requests and limits; ours cover the measured peaks."""
    for workload, _, container in containers(rendered[overlay]):
        res = container.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= res.get(kind, {}).keys(), f"{workload}: no {kind}"
    for name, peak in MEASURED_PEAK_MIB.items():
        res = deployment(rendered[overlay], name)["spec"]["template"]["spec"]["containers"][0][
            "resources"
        ]
        assert mebibytes(res["requests"]["memory"]) >= 1.2 * peak, name
        assert mebibytes(res["limits"]["memory"]) >= 2 * peak, name
        assert mebibytes(res["limits"]["memory"]) <= 4 * peak, f"{name}: limit hides a leak"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_non_root_with_read_only_root(overlay: str, rendered: dict[str, Any]) -> None:
    """Restricted Pod Security: non-root numeric user, read-only root, no capabilities."""
    for workload, pod, container in containers(rendered[overlay]):
        assert pod["securityContext"]["runAsNonRoot"] is True, workload
        assert pod["securityContext"]["runAsUser"] > 0, workload
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", workload
        assert pod["automountServiceAccountToken"] is False, workload
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False, workload
        assert ctx["readOnlyRootFilesystem"] is True, workload
        assert ctx["capabilities"]["drop"] == ["ALL"], workload
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        assert volumes[tmp["name"]]["emptyDir"]["sizeLimit"], f"{workload}: unbounded /tmp"
    namespace = objects(rendered[overlay], "Namespace")[0]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_packager_builds_in_a_bounded_emptydir(overlay: str, rendered: dict[str, Any]) -> None:
    """DICOMISO_WORK_DIR is an emptyDir large enough for a DVD image, and it is bounded."""
    pod = deployment(rendered[overlay], "packager")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    work_dir = next(e["value"] for e in container["env"] if e["name"] == "DICOMISO_WORK_DIR")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == work_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["sizeLimit"] == "6Gi"
    storage = container["resources"]
    assert mebibytes(storage["requests"]["ephemeral-storage"]) >= 6 * 1024
    assert mebibytes(storage["limits"]["ephemeral-storage"]) > 6 * 1024


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned(overlay: str, rendered: dict[str, Any]) -> None:
    """Every image names a registry path and a version tag; none is `latest` or untagged."""
    for workload, _, container in containers(rendered[overlay]):
        image = container["image"]
        name, _, tag = image.rpartition(":")
        assert "/" in name and tag and "/" not in tag, f"{workload}: {image} has no tag"
        assert tag != "latest" and "latest" not in image, f"{workload}: {image}"
        assert container.get("imagePullPolicy") == "IfNotPresent", workload


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_never_inlined(overlay: str, rendered: dict[str, Any]) -> None:
    """No credential sits in a ConfigMap or a literal env value: all come from secretKeyRef."""
    docs = rendered[overlay]
    for cm in objects(docs, "ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            assert key not in SECRET_SETTINGS, f"{cm['metadata']['name']}: {key}"
            if SECRETISH.search(key) and not key.endswith(("_URL",)):
                pytest.fail(f"{cm['metadata']['name']}: {key} looks like a secret")
            assert not CREDENTIAL_IN_URL.search(value), f"{cm['metadata']['name']}: {key}"
    for workload, _, container in containers(docs):
        for env in container.get("env", []):
            if env["name"] in SECRET_SETTINGS:
                assert "secretKeyRef" in env.get("valueFrom", {}), f"{workload}: {env['name']}"
            else:
                assert not CREDENTIAL_IN_URL.search(env.get("value", "")), workload
        assert not any("secretRef" in e for e in container.get("envFrom", [])), (
            f"{workload}: envFrom a whole Secret hands every key to every service"
        )


def secret_refs(docs: list[dict[str, Any]]) -> set[tuple[str, str, bool]]:
    return {
        (
            e["valueFrom"]["secretKeyRef"]["name"],
            e["valueFrom"]["secretKeyRef"]["key"],
            e["valueFrom"]["secretKeyRef"].get("optional", False),
        )
        for _, _, c in containers(docs)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_lab_secret_holds_every_referenced_key(rendered: dict[str, Any]) -> None:
    """In the lab, each required secretKeyRef points at a key of the generated Secret."""
    docs = rendered["lab"]
    secrets = {s["metadata"]["name"]: s.get("data", {}) for s in objects(docs, "Secret")}
    for name, key, optional in secret_refs(docs):
        assert key in secrets[name] or optional, f"{name}/{key}"


def test_production_renders_no_secret_and_documents_its_keys(rendered: dict[str, Any]) -> None:
    """Production secrets are created outside git; docs/deploy.md names every key needed."""
    docs = rendered["production"]
    assert objects(docs, "Secret") == []
    guide = (ROOT / "docs" / "deploy.md").read_text()
    refs = secret_refs(docs)
    assert {name for name, _, _ in refs} == {"dicomiso-secrets"}
    for _, key, _ in refs:
        assert f"`{key}`" in guide, key


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_bind_all_interfaces_and_skip_lifecycle(
    overlay: str, rendered: dict[str, Any]
) -> None:
    """In a pod the services listen beyond loopback; the lifecycle rule is not theirs to set."""
    settings = next(
        c
        for c in objects(rendered[overlay], "ConfigMap")
        if c["metadata"]["name"].startswith("dicomiso-settings")
    )["data"]
    assert settings["DICOMISO_HTTP_HOST"] == "0.0.0.0"
    assert settings["DICOMISO_MANAGE_LIFECYCLE"] == "false"
    assert settings["DICOMISO_SCP_PORT"] == str(SCP_PORT)
    assert settings["DICOMISO_S3_PUBLIC_URL"] != settings["DICOMISO_S3_ENDPOINT_URL"]
    retriever = deployment(rendered[overlay], "retriever")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in retriever["containers"][0]["env"]}
    assert env["DICOMISO_SCP_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_packager_scales_by_hpa(overlay: str, rendered: dict[str, Any]) -> None:
    """The HPA owns the packager's replica count (no `replicas` for kubectl apply to reset)."""
    hpa = objects(rendered[overlay], "HorizontalPodAutoscaler")
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpa] == ["packager"]
    assert hpa[0]["spec"]["minReplicas"] >= 2
    assert "replicas" not in deployment(rendered[overlay], "packager")["spec"]


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        obj["metadata"]["name"]: obj["spec"]["template"]["metadata"]["labels"]
        for obj in docs
        if obj["kind"] in WORKLOADS
    }


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels + In/NotIn/Exists)."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        op = expr["operator"]
        if (
            (op == "In" and value not in expr["values"])
            or (op == "NotIn" and value in expr["values"])
            or (op == "Exists" and value is None)
            or (op == "DoesNotExist" and value is not None)
        ):
            return False
    return True


def rule_ports(rule: dict[str, Any]) -> set[int] | None:
    """The ports a rule admits (None: all ports)."""
    return {p["port"] for p in rule["ports"]} if rule.get("ports") else None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_enforce_who_talks_to_whom(overlay: str, rendered: dict[str, Any]) -> None:
    """Default deny; only packager/forwarder reach retriever and lookup HTTP; DICOM egress only
    from the retriever and the forwarder; every egress rule names its ports."""
    docs = rendered[overlay]
    policies = objects(docs, "NetworkPolicy")
    assert any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ), "no default deny"
    labels = pod_labels(docs)
    callers = {"packager", "forwarder"}
    for workload, pod in labels.items():
        mine = [p for p in policies if selects(p["spec"]["podSelector"], pod)]
        for policy in mine:
            for rule in policy["spec"].get("egress", []):
                ports = rule_ports(rule)
                assert ports is not None, f"{policy['metadata']['name']}: egress to all ports"
                if pod.get("app.kubernetes.io/component") not in ("retriever", "forwarder"):
                    assert not ports & DICOM_PORTS, f"{workload} may reach DICOM ports"
            if workload not in ("lookup", "retriever"):
                continue
            for rule in policy["spec"].get("ingress", []):
                ports = rule_ports(rule)
                if ports is not None and SERVICES[workload] not in ports:
                    continue
                peers = rule.get("from")
                assert peers, f"{policy['metadata']['name']}: {workload} HTTP open to all"
                for peer in peers:
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        component = peer["podSelector"]["matchLabels"][
                            "app.kubernetes.io/component"
                        ]
                        assert component in callers, f"{component} may call {workload}"
                    else:
                        assert peer == {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                            }
                        }, peer


def test_lab_his_schema_is_the_lookup_schema() -> None:
    """The lab MariaDB is seeded from copies that must not drift from services/lookup."""
    his = DEPLOY / "k8s" / "overlays" / "lab" / "his"
    lookup = ROOT / "services" / "lookup"
    assert (his / "01-schema.sql").read_text() == (lookup / "schema.sql").read_text()
    assert (his / "02-seed.sql").read_text() == (lookup / "seed.sql").read_text()


IPV4 = re.compile(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d.])")
HOST_IN_URL = re.compile(r"://(?:[^/@\s]+@)?([A-Za-z0-9.-]+)")
IN_CLUSTER = {"lookup", "retriever", "forwarder", "minio", "mariadb", "localhost"}


def deploy_files() -> list[Path]:
    return [p for p in DEPLOY.rglob("*") if p.is_file()] + [ROOT / "docs" / "deploy.md"]


def test_no_addresses_only_fictional_hosts() -> None:
    """No IP address but the bind-all and loopback ones; URLs name example.org or in-cluster
    hosts, so nothing here can point at a real machine."""
    for path in deploy_files():
        text = path.read_text()
        for match in IPV4.finditer(text):
            assert match.group(0) in {"0.0.0.0", "127.0.0.1"}, f"{path}: {match.group(0)}"
        for host in HOST_IN_URL.findall(text):
            host = host.rstrip(".")
            if not host:  # a placeholder such as smtps://...:465
                continue
            assert (
                host in IN_CLUSTER
                or host.endswith((".example.org", ".svc.cluster.local"))
                or host in {"example.org", "127.0.0.1"}
            ), f"{path}: {host}"


def test_compose_mirrors_the_cluster_rules() -> None:
    """compose.yaml: one image, the same entry points, non-root, read-only, no inline secret."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    for name, port in SERVICES.items():
        svc = services[name]
        assert svc["command"] == [f"dicomiso-{name}"]
        assert svc["environment"]["DICOMISO_HTTP_PORT"] == str(port)
        assert svc["image"] == services["bucket-init"]["image"]
    for name, svc in services.items():
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", svc["user"]), name
        assert ":" in svc["image"] and not svc["image"].endswith(":latest"), name
        for key, value in svc.get("environment", {}).items():
            if key in SECRET_SETTINGS:
                assert str(value).startswith("${"), f"{name}: {key} inlined"
