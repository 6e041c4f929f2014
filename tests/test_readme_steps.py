"""The README's steps on a real cluster work as written on a FRESH one: a control plane of its own (not the
run's shared cluster, where other tests have made the namespaces already), the commands of step 3 taken
from README.md's code block and run with the kubectl the control plane was built with, then checked with
the official client: the namespaces, the ServiceAccount, the Roles, the Deployment admitted under PodSecurity
"restricted", and the API token's Secret where the Deployment mounts it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.kube_cluster import CLI, KubeCluster, wait_until

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def step_three_commands() -> list[str]:
    """The shell commands of the README's third step, comments dropped, in order."""
    text = README.read_text()
    step = text[text.index("3. **Grant the least privileges") : text.index("4. **Run in shadow first")]
    block = re.search(r"```bash\n(.*?)```", step, re.S)
    assert block, "step 3 shows its commands in a bash block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A control plane nobody has touched, started for this module alone and stopped after it."""
    where = tmp_path_factory.mktemp("fresh-cluster")
    run = subprocess.run(
        [sys.executable, str(CLI), "start", "--dir", str(where)], capture_output=True, text=True, timeout=300
    )
    if run.returncode != 0:
        pytest.fail(f"a fresh control plane did not start:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    try:
        yield KubeCluster.from_kubeconfig(where / "kubeconfig")
    finally:
        subprocess.run(
            [sys.executable, str(CLI), "stop", "--dir", str(where)], capture_output=True, timeout=120
        )


def test_the_readme_names_the_commands_of_step_three() -> None:
    commands = step_three_commands()
    assert commands[:2] == [
        "kubectl create namespace serving",
        "kubectl apply -k deploy/kubernetes/overlays/standalone",
    ]
    assert any("create secret generic prewarm-api-token" in c for c in commands)


def test_step_three_works_as_written_on_a_fresh_cluster(fresh: KubeCluster) -> None:
    kubectl = Path(fresh.kubectl_path)
    env = {
        **os.environ,
        "KUBECONFIG": str(fresh.kubeconfig),
        "PATH": f"{kubectl.parent}:{os.environ['PATH']}",
    }
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed: the README's Secret command uses it")
    for command in step_three_commands():
        if "monitoring/" in command:  # a fresh cluster has no Prometheus Operator: the README's optional line
            assert "Prometheus Operator" in README.read_text()
            continue
        r = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True)
        assert r.returncode == 0, f"{shlex.quote(command)} failed on a fresh cluster:\n{r.stdout}{r.stderr}"
        assert "Warning" not in r.stderr, r.stderr  # e.g. a PodSecurity violation the API server warns of
    api = fresh.api()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    assert (
        core.read_namespace("prewarm").metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    )
    assert core.read_namespaced_service_account("prewarm", "prewarm")
    rbac = client.RbacAuthorizationV1Api(api)
    assert rbac.read_namespaced_role("prewarm-actuator", "serving").rules
    assert rbac.read_namespaced_role_binding("prewarm-leader-election", "prewarm").subjects
    secret = core.read_namespaced_secret("prewarm-api-token", "prewarm")
    assert set(secret.data) == {"api-token"}
    dep = apps.read_namespaced_deployment("prewarm", "prewarm")
    mounted = {v.secret.secret_name for v in dep.spec.template.spec.volumes if v.secret is not None}
    assert "prewarm-api-token" in mounted
    # the ReplicaSet's pods are admitted under "restricted" (kwok runs them: no real image is pulled)
    wait_until(
        "the standalone Deployment's pods to be admitted",
        lambda: (
            len(core.list_namespaced_pod("prewarm", label_selector="app.kubernetes.io/name=prewarm").items)
            == dep.spec.replicas
        ),
        timeout_s=60,
    )
