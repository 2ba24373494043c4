"""deploy/kubernetes: the manifests parse and agree with each other, with the app's routes, the Dockerfile,
service/settings.py and the shutdown drain in service/cli.py; docs/operations.md's settings table lists every setting
with its default.

No cluster and no kubectl here: these structural checks are the validation, plus the Kubernetes JSON schemas
that the kubernetes-validate wheel ships (strict: an unknown or misspelt field fails).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.cli import GRACEFUL_SHUTDOWN_SECONDS
from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "kubernetes"
SECRET_ENV = "KWS_API_KEY"  # comes from a Secret, never from the ConfigMap
SETTING_NAMES = {f"KWS_{name.upper()}": name for name in Settings.model_fields}


# -- reading the files ---------------------------------------------------------------------------------------


def kustomization() -> dict:
    return yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())


def load_manifests() -> dict[str, dict]:
    """Every resource the kustomization lists, by kind (one document per file)."""
    by_kind = {}
    for name in kustomization()["resources"]:
        documents = [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]
        assert len(documents) == 1, f"{name}: expected one document, got {len(documents)}"
        document = documents[0]
        assert document["kind"] not in by_kind, f"{name}: a second {document['kind']}"
        by_kind[document["kind"]] = document
    return by_kind


MANIFESTS = load_manifests()
DEPLOYMENT = MANIFESTS["Deployment"]
POD = DEPLOYMENT["spec"]["template"]
CONTAINER = POD["spec"]["containers"][0]
CONFIG = MANIFESTS["ConfigMap"]["data"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's runtime stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    instructions = [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    last_from = max(i for i, (keyword, *_) in enumerate(instructions) if keyword.upper() == "FROM")
    return [(keyword.upper(), rest[0] if rest else "") for keyword, *rest in instructions[last_from:]]


def image_port() -> int:
    (port,) = [int(args.split("/")[0]) for keyword, args in dockerfile_instructions() if keyword == "EXPOSE"]
    return port


def image_uid() -> int:
    (uid,) = [int(m) for keyword, args in dockerfile_instructions() if keyword == "RUN"
              for m in re.findall(r"useradd\b.*?--uid[ =](\d+)", args)]
    return uid


def image_environment() -> dict[str, str]:
    env = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def container_port(name_or_number: str | int) -> int:
    """A probe's or the Service's port: a number, or the name of one of the container's ports."""
    if isinstance(name_or_number, int):
        return name_or_number
    (port,) = [p["containerPort"] for p in CONTAINER["ports"] if p.get("name") == name_or_number]
    return port


def cpu_cores(quantity: str | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_bytes(quantity: str | int) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", str(quantity)).groups()
    return int(number) * units.get(unit, 1)


def probes() -> dict[str, dict]:
    return {kind: CONTAINER[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe") if kind in CONTAINER}


# -- structure -------------------------------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_in_the_folder():
    files = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization()["resources"]) == sorted(files)
    assert {image["name"] for image in kustomization().get("images", [])} <= {CONTAINER["image"].split(":")[0]}
    assert {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"} <= set(MANIFESTS)
    for kind, manifest in MANIFESTS.items():
        assert manifest["apiVersion"] and manifest["metadata"]["name"], kind


@pytest.mark.parametrize("version", ["1.27.0", "latest"])
def test_every_manifest_passes_the_kubernetes_schema(version):
    validator = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) ships the schemas")
    version = validator.latest_version() if version == "latest" else version
    problems = []
    for kind, manifest in MANIFESTS.items():
        try:
            validator.validate(manifest, version, strict=True)
        except validator.ValidationError as error:
            problems.append(f"{kind} against Kubernetes {version}: {error.message} at {list(error.path)}")
    assert not problems, "\n".join(problems)


def test_selectors_pick_the_deployments_pods():
    pod_labels = POD["metadata"]["labels"]
    selector = DEPLOYMENT["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert MANIFESTS["Service"]["spec"]["selector"].items() <= pod_labels.items()
    if "PodDisruptionBudget" in MANIFESTS:
        assert MANIFESTS["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    target = MANIFESTS["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", DEPLOYMENT["metadata"]["name"])
    config_refs = {ref["configMapRef"]["name"] for ref in CONTAINER.get("envFrom", []) if "configMapRef" in ref}
    assert config_refs == {MANIFESTS["ConfigMap"]["metadata"]["name"]}


# -- probes, ports and metrics against the app and the image --------------------------------------------------


def test_probes_use_the_apps_liveness_and_readiness_routes():
    app = create_app(Settings())
    get_paths = {path for path, methods in app.openapi()["paths"].items() if "get" in methods}
    for kind, probe in probes().items():
        assert probe["httpGet"]["path"] in get_paths, kind
    # Without its lifespan the app has no model: liveness must still pass, readiness must not.
    client = TestClient(app)
    assert client.get(CONTAINER["livenessProbe"]["httpGet"]["path"]).status_code == 200
    assert client.get(CONTAINER["startupProbe"]["httpGet"]["path"]).status_code == 200
    assert client.get(CONTAINER["readinessProbe"]["httpGet"]["path"]).status_code == 503
    annotations = POD["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    metrics = client.get(annotations["prometheus.io/path"])
    assert metrics.status_code == 200 and metrics.text.startswith("# HELP kws_")


def test_every_port_is_the_images_port():
    port = image_port()
    assert [p["containerPort"] for p in CONTAINER["ports"]] == [port]
    assert int(CONFIG["KWS_PORT"]) == port
    for kind, probe in probes().items():
        assert container_port(probe["httpGet"]["port"]) == port, kind
    (service_port,) = MANIFESTS["Service"]["spec"]["ports"]
    assert container_port(service_port["targetPort"]) == port
    assert int(POD["metadata"]["annotations"]["prometheus.io/port"]) == port


def test_readiness_drops_before_liveness_would_restart():
    readiness, liveness = CONTAINER["readinessProbe"], CONTAINER["livenessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] < liveness["periodSeconds"] * liveness["failureThreshold"]
    for kind, probe in probes().items():
        assert probe["timeoutSeconds"] <= probe["periodSeconds"], kind


# -- settings ----------------------------------------------------------------------------------------------


def test_configmap_keys_are_exactly_settings_names():
    unknown = set(CONFIG) - set(SETTING_NAMES)
    assert not unknown, f"not KWS_* names of service.settings.Settings fields: {sorted(unknown)}"
    assert SECRET_ENV not in CONFIG, "the API key belongs in a Secret"
    # A setting left out of the ConfigMap must be named in its comments, saying why.
    comments = "\n".join(line for line in (DEPLOY / "configmap.yaml").read_text().splitlines() if line.lstrip().startswith("#"))
    missing = [name for name in set(SETTING_NAMES) - set(CONFIG) - {SECRET_ENV} if name not in comments]
    assert not missing, f"settings neither in the ConfigMap nor explained in its comments: {sorted(missing)}"


def test_configmap_values_are_what_the_container_runs_with(monkeypatch):
    """Each value parses, and equals the Dockerfile's ENV value for it, else the Settings default."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    image_env = image_environment()
    expected = Settings(**{SETTING_NAMES[k]: v for k, v in image_env.items() if k in SETTING_NAMES})
    for key, value in CONFIG.items():
        monkeypatch.setenv(key, value)
    configured = Settings()
    for key in CONFIG:
        field = SETTING_NAMES[key]
        assert getattr(configured, field) == getattr(expected, field), key


def test_api_key_comes_from_an_optional_secret():
    (entry,) = [e for e in CONTAINER.get("env", []) if e["name"] == SECRET_ENV]
    reference = entry["valueFrom"]["secretKeyRef"]
    assert reference["optional"] is True and reference["name"] and reference["key"]
    names = [e["name"] for e in CONTAINER.get("env", [])]
    assert set(names) <= set(SETTING_NAMES) and len(names) == len(set(names))


def test_no_service_link_variables_collide_with_the_settings_prefix():
    # A Service named `kws` makes the kubelet inject KWS_PORT=tcp://<ip>:80 unless service links are off.
    assert POD["spec"]["enableServiceLinks"] is False


# -- resources, shutdown, security ---------------------------------------------------------------------------


def test_cpu_covers_the_onnx_threads_and_memory_is_bounded():
    threads = int(CONFIG.get("KWS_INTRA_OP_THREADS", Settings.model_fields["intra_op_threads"].default))
    resources = CONTAINER["resources"]
    assert cpu_cores(resources["requests"]["cpu"]) >= threads
    assert cpu_cores(resources["limits"]["cpu"]) >= cpu_cores(resources["requests"]["cpu"])
    assert 0 < memory_bytes(resources["requests"]["memory"]) <= memory_bytes(resources["limits"]["memory"])


def prestop_pause_seconds() -> float:
    pre_stop = CONTAINER["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return pre_stop["sleep"]["seconds"]
    command = pre_stop["exec"]["command"]
    assert Path(command[0]).name == "sleep" and len(command) == 2, command
    return float(command[1])


def test_grace_period_outlasts_the_prestop_pause_and_the_drain():
    pause = prestop_pause_seconds()
    assert pause > 0
    assert POD["spec"]["terminationGracePeriodSeconds"] > pause + GRACEFUL_SHUTDOWN_SECONDS


def test_pod_runs_as_the_images_non_root_user_on_a_read_only_root():
    pod_context, context = POD["spec"].get("securityContext", {}), CONTAINER["securityContext"]
    merged = {**pod_context, **context}  # container fields override the pod's
    assert merged["runAsNonRoot"] is True
    assert merged["runAsUser"] == image_uid()
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"] and not context["capabilities"].get("add")
    assert merged["seccompProfile"]["type"] == "RuntimeDefault"
    assert POD["spec"]["automountServiceAccountToken"] is False


def test_autoscaler_scales_on_cpu_and_disruptions_keep_a_pod():
    spec = MANIFESTS["HorizontalPodAutoscaler"]["spec"]
    assert MANIFESTS["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"
    assert 1 <= spec["minReplicas"] < spec["maxReplicas"]
    (metric,) = spec["metrics"]
    assert metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0
    assert "replicas" not in DEPLOYMENT["spec"], "the HPA owns the replica count"
    if "PodDisruptionBudget" in MANIFESTS:
        assert 1 <= MANIFESTS["PodDisruptionBudget"]["spec"]["minAvailable"] < spec["minReplicas"]


# -- docs/operations.md -----------------------------------------------------------------------------------

SETTINGS_PAGE = REPO / "docs" / "operations.md"


def settings_table() -> dict[str, str]:
    """``KWS_NAME`` → the default column of the table under "Every setting"."""
    rows = re.findall(r"^\| `(KWS_[A-Z_]+)` \| ([^|]*) \|", SETTINGS_PAGE.read_text(), flags=re.MULTILINE)
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), f"a setting is listed twice: {sorted(names)}"
    return dict(rows)


def documented_default(cell: str, default: object) -> object:
    """The default a table cell states, as the field's type: "empty ..." or the first `code` span."""
    if cell.startswith("empty"):
        return ""
    match = re.search(r"`([^`]+)`", cell)
    assert match, f"no `value` in the default column: {cell!r}"
    token = match.group(1)
    if isinstance(default, bool):
        return token == "true"
    if isinstance(default, Path):
        return (REPO / token).resolve()
    return type(default)(token)


def test_settings_table_lists_every_setting():
    assert sorted(settings_table()) == sorted(SETTING_NAMES), "docs/operations.md's settings table and service/settings.py differ"


def test_settings_table_states_the_defaults():
    for name, cell in settings_table().items():
        default = Settings.model_fields[SETTING_NAMES[name]].default
        if hasattr(default, "get_secret_value"):
            default = default.get_secret_value()
        assert documented_default(cell, default) == default, f"{name}: docs/operations.md says {cell!r}, Settings has {default!r}"
