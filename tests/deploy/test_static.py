"""The deploy files checked without a container engine: schemas, linters, and consistency
with what the broker and the image expect (the tools come from the ``test`` extra)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate

from broker.settings import Settings
from tests.deploy.manifests import COMPOSE, DOCKERFILE, K8S, compose_command, image_env, k8s_documents, pod_command, statefulset

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    assert path.exists(), f"{name} missing: install the test extra (pip install -e '.[test]')"
    return str(path)


def test_kubernetes_manifests_are_valid_and_strict() -> None:
    for doc in k8s_documents():
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run([_tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_file_matches_the_compose_spec() -> None:
    done = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_images_are_pinned_and_the_build_context_is_filtered() -> None:
    bases = re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), re.M)
    assert bases and all(re.search(r":\d+\.\d+\.\d+", b) for b in bases), bases
    image = statefulset()["spec"]["template"]["spec"]["containers"][0]["image"]
    assert not image.endswith(":latest") and ":" in image, image
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "deploy/cluster.key", "tests"):
        assert entry in ignored, entry


def test_the_statefulset_serves_every_pod_with_one_command_line_and_a_writable_volume() -> None:
    spec = statefulset()["spec"]["template"]["spec"]
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"]
    uid = re.search(r"^USER (\d+)", DOCKERFILE.read_text(), re.M)
    assert uid and int(uid.group(1)) == spec["securityContext"]["runAsUser"]
    argv, _ = pod_command("rsbroker-0")  # refuses a shell ``command`` that branches per pod
    assert any(a.startswith("--bootstrap-expect=") for a in argv)
    joined = next(a for a in argv if a.startswith("--join=")).split("=", 1)[1].split(",")
    assert joined == [f"rsbroker-{i}.rsbroker-peers:7946" for i in range(3)]
    container = spec["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"


def test_every_mounted_configmap_and_secret_is_defined_or_created_by_the_documented_commands() -> None:
    header = K8S.read_text().split("\napiVersion", 1)[0]
    defined = {(d["kind"], d["metadata"]["name"]) for d in k8s_documents()}
    spec = statefulset()["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    for volume in spec["volumes"]:
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            assert ("ConfigMap", name) in defined or f"create configmap {name}" in header, name
            for item in volume["configMap"].get("items", []):  # the file the broker is told to read is there
                assert f"{mounts[volume['name']]}/{item['path']}" == env["RSBROKER_JWT_KEYS"]
                assert f"--from-file={item['key']}=" in header
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            assert ("Secret", name) in defined or f"create secret generic {name}" in header, name


def test_every_setting_the_deploy_files_give_is_a_real_setting() -> None:
    known = set(Settings.__dataclass_fields__)
    argvs = [pod_command("rsbroker-0"), *(compose_command(s) for s in ("n1", "n2", "n3"))]
    for argv, env in argvs:
        for arg in argv:
            if arg.startswith("--"):
                assert arg[2:].split("=", 1)[0].replace("-", "_") in known, arg
        for var in [*env, *image_env()]:
            if var.startswith("RSBROKER_"):
                assert var[len("RSBROKER_") :].lower() in known, var
