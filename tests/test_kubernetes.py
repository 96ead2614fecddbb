"""The Kubernetes pool adapter against a local server speaking the Kubernetes API, over loopback HTTP.

What is real: the official ``kubernetes`` client (its kubeconfig loading from a file the tests write,
its request building, its models and its parsing of the answers) and everything the adapter does with
it. What is substituted: the cluster's API server, by the stub in ``tests/k8s_stub.py``, which answers
the few paths the adapter uses with the API's shapes and validates every body the adapter creates
against the client's own models (and the API server's main rules for Deployments and Jobs); a
rejected body fails the test. There is no kubelet, scheduler or controller behind it: nodes and pods
are seeded by the tests, objects keep the status the tests give them, and nothing is scheduled.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from placement.errors import PlacementError
from placement.models import GeoPoint, Offer
from placement.refresh import read_provider
from providers.base import (
    TAG_KEY,
    TAG_MANAGED,
    TAG_PLAN,
    Denied,
    InsufficientCapacity,
    ManagedResource,
    NotFound,
    ProviderError,
    QuotaExceeded,
    ResourceSpec,
    Transient,
)
from providers.kubernetes import (
    COMMAND_LABEL,
    IMAGE_LABEL,
    KubernetesCompute,
    KubernetesSettings,
    Toleration,
    error_from_api,
    label_value,
    object_name,
    pod_gpus,
    snap_memory,
    workload_kind,
)
from tests.k8s_stub import TOKEN, K8sStub

PLAN = "sha256:" + "ab" * 32
NS = "gpu-jobs"
H100 = "NVIDIA-H100-80GB-HBM3"
L40S = "NVIDIA-L40S"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
TOLERATE_GPU = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def seed(stub: K8sStub) -> None:
    # Four 8x H100 nodes.
    stub.add_node("h100-0", H100, 8)
    stub.add_pod("train-a", "h100-0", 3)
    stub.add_pod("notebook", "h100-0", 1, limits_only=True)  # limit only: the request defaults to it
    stub.add_node("h100-1", H100, 8)
    stub.add_pod("finished", "h100-1", 8, phase="Succeeded")  # ended pods hold nothing
    stub.add_pod("crashed", "h100-1", 8, phase="Failed")
    stub.add_pod("warmup", "h100-1", 1, init_gpus=2)  # init container asks for more than the app: 2
    stub.add_node("h100-2", H100, 8, unschedulable=True)  # cordoned
    stub.add_node("h100-3", H100, 8, taints=[GPU_TAINT])
    stub.add_pod("queued", None, 4, phase="Pending")  # not bound to a node yet
    # Two 4x L40S nodes; GPU memory only from the GPU feature discovery label (MiB).
    stub.add_node("l40s-0", L40S, 4, cpu="64", memory="512Gi", gpu_memory_mib=46068)
    stub.add_pod("embed", "l40s-0", 2, namespace="team-b")
    stub.add_node("l40s-1", L40S, 4, cpu="64", memory="512Gi", gpu_memory_mib=46068, ready=False)
    # An A100 node without an internal cost, a CPU node, and a GPU of a product nobody knows.
    stub.add_node("a100-0", "NVIDIA-A100-SXM4-80GB", 8)
    stub.add_node("cpu-0", None, 0)
    stub.add_node("odd-0", "NVIDIA-Foo-9000", 2)


@pytest.fixture
def stub() -> Iterator[K8sStub]:
    server = K8sStub().start()
    seed(server)
    try:
        yield server
        assert server.violations == [], "bodies the API server would reject"
    finally:
        server.stop()


def write_kubeconfig(path: Path, server: str, token: str = TOKEN) -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "stub",
        "clusters": [{"name": "stub", "cluster": {"server": server}}],
        "users": [{"name": "placement", "user": {"token": token}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "placement", "namespace": NS}}],
    }
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


def settings_for(kubeconfig: Path | None, **changes: Any) -> KubernetesSettings:
    data: dict[str, Any] = {
        "type": "kubernetes",
        "kubeconfig": str(kubeconfig) if kubeconfig else None,
        "context": "stub",
        "namespace": NS,
        "gpu_memory_label": "nvidia.com/gpu.memory",
        "tolerations": [TOLERATE_GPU],
        "site": {"region": "fra-dc1", "country": "DE", "jurisdiction": "EU", "location": {"lat": 50.11, "lon": 8.68},
                 "pue": 1.5, "electricity_usd_per_kwh": 0.2},
        "costs": {"H100": {"capital_usd": 300000, "lifetime_years": 4, "power_kw": 10.2},
                  "L40S": {"capital_usd": 60000, "lifetime_years": 5}},
    }
    data.update(changes)
    return KubernetesSettings.model_validate(data)


@pytest.fixture
def settings(stub: K8sStub, tmp_path: Path) -> KubernetesSettings:
    return settings_for(write_kubeconfig(tmp_path / "kubeconfig", stub.url))


def adapter(settings: KubernetesSettings) -> KubernetesCompute:
    return KubernetesCompute("corp-k8s", settings)


def slice_offer(compute: KubernetesCompute, model: str, per_node: int, k: int) -> Offer:
    wanted = f"k8s-{model.lower()}-{per_node}g-slice-{k}g"
    return next(o for o in compute.offers() if o.instance_type == wanted)


def spec_for(offer: Offer, *, workload: str = "chat", replica: int = 0, nodes: int = 1,
             kind: Literal["service", "batch"] = "service", labels: dict[str, str] | None = None) -> ResourceSpec:
    return ResourceSpec.for_replica(plan_digest=PLAN, workload=workload, replica=replica, team="genai", offer=offer,
                                    nodes=nodes, labels=dict(labels or {}), kind=kind)


def posts(stub: K8sStub) -> list[tuple[str, str]]:
    return [(m, p) for m, p in stub.requests if m == "POST"]


# --------------------------------------------------------------------------------------------------
# Helpers and settings
# --------------------------------------------------------------------------------------------------


def test_names_labels_and_kinds() -> None:
    key = "chat-r0-0123456789abcdef01234567"
    assert object_name(key) == f"plc-{key}"
    long_key = "k" * 64
    assert len(object_name(long_key)) <= 52 and object_name(long_key) != object_name("k" * 63 + "j")
    assert object_name("Under_score") != object_name("under-score")  # sanitised names keep distinct keys apart
    assert label_value(PLAN).startswith("sha256_abab") and len(label_value(PLAN)) == 63
    assert label_value("-x-") == "x" and label_value("a b") == "a_b"
    offer = Offer(provider="p", provider_kind="on-prem", region="r", country="DE", jurisdiction="EU",
                  instance_type="k8s-h100-8g-slice-8g", gpu_model="H100", gpu_count=8, gpu_memory_gib=80, vcpus=96,
                  memory_gib=1000, capacity_type="owned", hourly_usd=1.0, location=GeoPoint(lat=50.1, lon=8.7))
    assert workload_kind(spec_for(offer)) == "service"
    assert workload_kind(spec_for(offer, nodes=2)) == "service"
    assert workload_kind(spec_for(offer, kind="batch")) == "batch"
    assert snap_memory("H100", 81559 / 1024) == 80 and snap_memory("A100", None) == 40
    assert snap_memory("L40S", 46068 / 1024) == 48


def test_settings_validation(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    settings_for(path)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"costs": {"H1000": {"capital_usd": 1}}}, "unknown GPU model 'H1000'"),
        ({"gpu_models": {"Custom-GPU": "Z9"}}, "unknown GPU model 'Z9'"),
        ({"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}, "operator Exists takes no value"),
        ({"tolerations": [{"value": "b"}]}, "without a key must use operator Exists"),
        ({"node_selector": {"bad key!": "x"}}, "not a valid Kubernetes label"),
        ({"node_selector": {"nvidia.com/gpu.product": "x"}}, "adapter selects the GPU product"),
        ({"labels": {"placement.dev/owner": "x"}}, "reserved prefix"),
        ({"namespace": "Not_A_Namespace"}, "namespace"),
        ({"token": "abc"}, "Extra inputs are not permitted"),
        ({"request_fraction": 0}, "request_fraction"),
    ]
    for change, message in cases:
        with pytest.raises(ValidationError, match=message):
            settings_for(path, **change)
    # Aliases resolve to canonical models.
    assert set(settings_for(path, costs={"h100-sxm5": {"capital_usd": 1}}).costs) == {"H100"}


def test_tolerations_match_as_kubernetes_does() -> None:
    from kubernetes import client as k8s

    taint = k8s.V1Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")
    assert Toleration(key="nvidia.com/gpu", operator="Exists").tolerates(taint)
    assert Toleration(key="nvidia.com/gpu", value="present", effect="NoSchedule").tolerates(taint)
    assert not Toleration(key="nvidia.com/gpu", value="absent").tolerates(taint)
    assert not Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoExecute").tolerates(taint)
    assert Toleration(operator="Exists").tolerates(taint)  # empty key and Exists: everything


def test_pod_gpus_counts_requests_limits_and_init_containers() -> None:
    from kubernetes import client as k8s

    def c(requests: dict[str, str] | None = None, limits: dict[str, str] | None = None) -> k8s.V1Container:
        return k8s.V1Container(name="c", resources=k8s.V1ResourceRequirements(requests=requests, limits=limits))

    pod = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[c({"nvidia.com/gpu": "2"}, {"nvidia.com/gpu": "2"}),
                                                   c(None, {"nvidia.com/gpu": "1"}), c({"cpu": "1"})],
                                       init_containers=[c(None, {"nvidia.com/gpu": "4"})]))
    assert pod_gpus(pod, "nvidia.com/gpu") == 4
    pod.spec.init_containers = None  # type: ignore[union-attr]
    assert pod_gpus(pod, "nvidia.com/gpu") == 3


# --------------------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------------------


def test_inventory_counts_free_gpus_per_node_shape(stub: K8sStub, settings: KubernetesSettings) -> None:
    compute = adapter(settings)
    inv = compute.inventory()
    nodes = {n.owned.name: n for n in inv.nodes}
    assert set(nodes) == {"h100-0", "h100-1", "h100-2", "h100-3", "l40s-0", "l40s-1", "a100-0"}  # no cpu-0, odd-0
    assert {n: nodes[n].owned.gpus_free for n in nodes if n.startswith("h100")} == {
        "h100-0": 4, "h100-1": 6, "h100-2": 8, "h100-3": 8}
    assert nodes["h100-2"].not_free == ("cordoned",) and not nodes["h100-2"].owned.schedulable
    assert nodes["h100-3"].owned.schedulable  # its taint is tolerated
    assert nodes["l40s-1"].not_free == ("not Ready",)
    assert nodes["l40s-0"].owned.gpu_memory_gib == 48 and nodes["h100-0"].owned.gpu_memory_gib == 80

    pools = {p.id: p for p in inv.pools}
    assert pools["corp-k8s/fra-dc1/h100-8g"].limit == 4 + 6 + 8
    assert pools["corp-k8s/fra-dc1/l40s-4g"].limit == 2
    assert "18 of 32 GPUs free" in (pools["corp-k8s/fra-dc1/h100-8g"].description or "")

    offers = {o.instance_type: o for o in inv.offers}
    assert {t: o.available for t, o in offers.items() if t.startswith("k8s-h100")} == {
        "k8s-h100-8g-slice-1g": 18, "k8s-h100-8g-slice-2g": 9, "k8s-h100-8g-slice-4g": 4, "k8s-h100-8g-slice-8g": 1}
    assert {t: o.available for t, o in offers.items() if t.startswith("k8s-l40s")} == {
        "k8s-l40s-4g-slice-1g": 2, "k8s-l40s-4g-slice-2g": 1, "k8s-l40s-4g-slice-4g": 0}
    h100_1g = offers["k8s-h100-8g-slice-1g"]
    gpu_hour = settings.gpu_hour_usd("H100", 8)
    assert gpu_hour is not None
    assert h100_1g.hourly_usd == round(gpu_hour, 4) and offers["k8s-h100-8g-slice-4g"].hourly_usd == round(gpu_hour * 4, 4)
    assert (h100_1g.capacity_type, h100_1g.region, h100_1g.jurisdiction, h100_1g.provider_kind) == (
        "owned", "fra-dc1", "EU", "on-prem")
    assert (h100_1g.vcpus, h100_1g.gpu_memory_gib, h100_1g.pools) == (12, 80, ("corp-k8s/fra-dc1/h100-8g",))
    assert all(o.unavailable_reason is None for t, o in offers.items() if not t.startswith("k8s-a100"))
    a100 = offers["k8s-a100-8g-slice-8g"]
    assert a100.available == 1 and a100.unavailable_reason and "no internal cost configured for A100" in a100.unavailable_reason

    # What refresh reads, and the idle report.
    got_offers, got_pools = read_provider(compute)
    assert len(got_offers) == len(inv.offers) and len(got_pools) == 3
    owned = {o.pool_id: o for o in compute.owned_capacity()}
    assert (owned["corp-k8s/fra-dc1/h100-8g"].gpus_total, owned["corp-k8s/fra-dc1/h100-8g"].gpus_free) == (32, 18)
    assert owned["corp-k8s/fra-dc1/a100-8g"].gpu_hour_usd is None
    # One list of nodes, one of live pods across namespaces.
    gets = [(urlsplit(p).path, parse_qs(urlsplit(p).query)) for m, p in stub.requests if m == "GET"]
    assert ("/api/v1/nodes", {"labelSelector": ["nvidia.com/gpu.product"]}) in gets
    assert ("/api/v1/pods", {"fieldSelector": ["status.phase!=Succeeded,status.phase!=Failed"]}) in gets


def test_untolerated_taint_and_node_selector_narrow_the_inventory(stub: K8sStub, tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kubeconfig", stub.url)
    offers = {o.instance_type: o for o in adapter(settings_for(path, tolerations=[])).offers()}
    assert offers["k8s-h100-8g-slice-1g"].available == 4 + 6
    assert offers["k8s-h100-8g-slice-8g"].available == 0
    stub.nodes["h100-1"]["metadata"]["labels"]["pool"] = "shared"
    narrowed = adapter(settings_for(path, node_selector={"pool": "shared"})).inventory()
    assert [n.owned.name for n in narrowed.nodes] == ["h100-1"]


# --------------------------------------------------------------------------------------------------
# Actuation
# --------------------------------------------------------------------------------------------------


def test_service_becomes_a_deployment(stub: K8sStub, settings: KubernetesSettings) -> None:
    compute = adapter(settings)
    offer = slice_offer(compute, "H100", 8, 2)
    spec = spec_for(offer, kind="service", labels={"tier": "gold", IMAGE_LABEL: "registry.local/chat:1.4",
                                                   COMMAND_LABEL: "python -m serve --port 8000"})
    created = compute.create(spec)
    name = object_name(spec.key)
    assert created == ManagedResource(provider="corp-k8s", resource_ids=(f"deployment/{NS}/{name}",), region="fra-dc1",
                                      zone=None, key=spec.key, workload="chat", replica=0, offer_id=offer.id,
                                      plan_digest=PLAN, state="Pending")
    assert posts(stub) == [("POST", f"/apis/apps/v1/namespaces/{NS}/deployments?fieldManager=placement")]
    body = stub.posted[-1]
    assert (body["apiVersion"], body["kind"], body["metadata"]["name"], body["spec"]["replicas"]) == (
        "apps/v1", "Deployment", name, 1)
    labels = body["metadata"]["labels"]
    assert labels[TAG_MANAGED] == "true" and labels[TAG_KEY] == spec.key and labels["tier"] == "gold"
    assert labels[TAG_PLAN] == label_value(PLAN) and labels["app.kubernetes.io/managed-by"] == "placement"
    assert IMAGE_LABEL not in labels and body["metadata"]["annotations"][TAG_PLAN] == PLAN
    assert body["spec"]["selector"] == {"matchLabels": {TAG_MANAGED: "true", TAG_KEY: spec.key}}
    pod = body["spec"]["template"]["spec"]
    assert body["spec"]["template"]["metadata"]["labels"] == labels
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": H100} and "affinity" not in pod
    assert pod["tolerations"] == [TOLERATE_GPU] and pod["restartPolicy"] == "Always"
    (container,) = pod["containers"]
    assert container["image"] == "registry.local/chat:1.4"
    assert container["command"] == ["python", "-m", "serve", "--port", "8000"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "2"},
                                      "requests": {"nvidia.com/gpu": "2", "cpu": "21600m", "memory": "243302Mi"}}
    assert {e["name"]: e["value"] for e in container["env"]}["PLACEMENT_KEY"] == spec.key


def test_batch_becomes_a_job_and_multi_node_an_indexed_job(stub: K8sStub, settings: KubernetesSettings) -> None:
    compute = adapter(settings)
    single = compute.create(spec_for(slice_offer(compute, "L40S", 4, 1), workload="etl", kind="batch"))
    assert single.resource_ids[0].startswith(f"job/{NS}/plc-etl-r0-") and single.state == "Pending"
    job = stub.posted[-1]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert "completionMode" not in job["spec"] and "selector" not in job["spec"]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == settings.image
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": L40S}

    # Two nodes of four H100 each (a 4g slice on the 8-GPU shape).
    multi = spec_for(slice_offer(compute, "H100", 8, 4), workload="trainer", nodes=2, kind="batch")
    compute.create(multi)
    job = stub.posted[-1]
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 2, 2)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "4"}

    with pytest.raises(ProviderError, match="cannot be a Deployment") as info:
        compute.create(spec_for(slice_offer(compute, "H100", 8, 4), workload="big-chat", nodes=2, kind="service"))
    assert info.value.code == "MultiNodeService" and not info.value.retryable


def test_same_product_on_two_shapes_pins_host_names(stub: K8sStub, settings: KubernetesSettings) -> None:
    stub.add_node("h100-small", H100, 4)
    compute = adapter(settings)
    compute.create(spec_for(slice_offer(compute, "H100", 4, 4), workload="small", kind="batch"))
    pod = stub.posted[-1]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": H100}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                            "values": ["h100-small"]}]}]


def test_create_is_idempotent_and_adopts_after_a_conflict(stub: K8sStub, settings: KubernetesSettings) -> None:
    compute = adapter(settings)
    offer = slice_offer(compute, "H100", 8, 1)
    spec = spec_for(offer)
    first = compute.create(spec)
    assert compute.create(spec) == first
    assert adapter(settings).create(spec) == first  # a new process
    assert len(posts(stub)) == 1 and len(stub.objects["deployments"]) == 1

    # The read misses it (a race with another writer): the create answers 409 and the object is adopted.
    other = spec_for(offer, replica=1)
    compute.create(other)
    stub.fail("GET", object_name(other.key), 404, "NotFound", "not found")
    assert compute.create(other).key == other.key
    assert len(posts(stub)) == 3 and len(stub.objects["deployments"]) == 2

    # An object of that name that belongs to another key is not adopted.
    stored = stub.objects["deployments"][(NS, object_name(spec.key))]
    stored["metadata"]["annotations"][TAG_KEY] = "someone-else"
    with pytest.raises(ProviderError, match="belongs to key 'someone-else'") as info:
        compute.create(spec)
    assert info.value.code == "NameConflict"


def test_an_object_being_deleted_is_not_adopted(stub: K8sStub, settings: KubernetesSettings) -> None:
    compute = adapter(settings)
    spec = spec_for(slice_offer(compute, "H100", 8, 1), kind="batch")
    compute.create(spec)
    stub.objects["jobs"][(NS, object_name(spec.key))]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    with pytest.raises(Transient, match="still being deleted"):
        compute.create(spec)
    assert compute.list_managed() == []


def test_list_managed_and_delete(stub: K8sStub, settings: KubernetesSettings) -> None:
    compute = adapter(settings)
    service = spec_for(slice_offer(compute, "H100", 8, 1), workload="chat")
    batch = spec_for(slice_offer(compute, "L40S", 4, 2), workload="etl", kind="batch")
    svc, job = compute.create(service), compute.create(batch)
    # Someone's own Deployment in the namespace, and a managed-looking one elsewhere, are not listed.
    from kubernetes import client as k8s

    api = k8s.AppsV1Api(compute._client())
    template = k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels={"app": "x"}),
                                     spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="x", image="nginx")]))
    api.create_namespaced_deployment(NS, k8s.V1Deployment(
        api_version="apps/v1", kind="Deployment", metadata=k8s.V1ObjectMeta(name="hand-made"),
        spec=k8s.V1DeploymentSpec(selector=k8s.V1LabelSelector(match_labels={"app": "x"}), template=template)))
    api.create_namespaced_deployment("other", k8s.V1Deployment(
        api_version="apps/v1", kind="Deployment",
        metadata=k8s.V1ObjectMeta(name="elsewhere", labels={TAG_MANAGED: "true"}),
        spec=k8s.V1DeploymentSpec(selector=k8s.V1LabelSelector(match_labels={"app": "x"}), template=template)))

    managed = compute.list_managed()
    assert [(m.workload, m.key, m.state, m.resource_ids) for m in managed] == sorted(
        [("chat", service.key, "Pending", svc.resource_ids), ("etl", batch.key, "Pending", job.resource_ids)],
        key=lambda t: t[1])
    assert all(m.plan_digest == PLAN and m.region == "fra-dc1" for m in managed)

    # Status as the controllers would report it.
    stub.set_status("deployments", NS, object_name(service.key), {"replicas": 1, "availableReplicas": 1,
                                                                   "readyReplicas": 1, "observedGeneration": 1})
    stub.set_status("jobs", NS, object_name(batch.key), {"succeeded": 1, "conditions": [
        {"type": "Complete", "status": "True", "lastProbeTime": "2026-01-01T00:00:00Z",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
    assert {m.workload: m.state for m in compute.list_managed()} == {"chat": "Running", "etl": "Succeeded"}
    stub.set_status("deployments", NS, object_name(service.key), {"replicas": 0, "conditions": [
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
         "message": 'pods "x" is forbidden: exceeded quota: gpus, requested: requests.nvidia.com/gpu=1'}]})
    assert {m.workload: m.state for m in compute.list_managed()}["chat"] == "Failed"

    compute.delete(svc)
    assert [m.workload for m in compute.list_managed()] == ["etl"]
    compute.delete(svc)  # already gone: done
    # By key alone (a record without resource ids).
    compute.delete(ManagedResource(provider="corp-k8s", resource_ids=(), region="fra-dc1", zone=None, key=batch.key,
                                   workload="", replica=-1, offer_id="", plan_digest="", state="recorded"))
    assert compute.list_managed() == []
    assert {(res, policy) for res, _, policy in stub.deletes} == {("deployments", "Background"), ("jobs", "Background")}
    assert set(stub.objects["deployments"]) == {(NS, "hand-made"), ("other", "elsewhere")}


def test_no_free_gpus_is_insufficient_capacity(stub: K8sStub, tmp_path: Path) -> None:
    compute = adapter(settings_for(write_kubeconfig(tmp_path / "kubeconfig", stub.url), tolerations=[]))
    offer = slice_offer(compute, "H100", 8, 8)
    with pytest.raises(InsufficientCapacity, match="10 GPUs free on 2 schedulable node") as info:
        compute.create(spec_for(offer, kind="batch"))
    assert info.value.region == "fra-dc1" and posts(stub) == []
    unchecked = adapter(settings_for(write_kubeconfig(tmp_path / "kubeconfig", stub.url), tolerations=[],
                                     check_capacity=False))
    assert unchecked.create(spec_for(offer, kind="batch")).state == "Pending"  # left to the scheduler


def test_offers_of_other_pools_are_refused(stub: K8sStub, settings: KubernetesSettings) -> None:
    compute = adapter(settings)
    offer = slice_offer(compute, "H100", 8, 1)
    for change, message in (({"provider": "other"}, "belongs to provider"), ({"region": "ams"}, "is the site"),
                            ({"capacity_type": "on-demand"}, "not a slice")):
        with pytest.raises(PlacementError, match=message):
            compute.create(spec_for(offer.model_copy(update=change)))
    assert posts(stub) == []


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def test_object_count_quota_is_quota_exceeded(stub: K8sStub, settings: KubernetesSettings) -> None:
    stub.object_quota = {"count/jobs.batch": 1}
    compute = adapter(settings)
    offer = slice_offer(compute, "H100", 8, 1)
    compute.create(spec_for(offer, kind="batch", replica=0))
    with pytest.raises(QuotaExceeded, match="exceeded quota: object-counts") as info:
        compute.create(spec_for(offer, kind="batch", replica=1))
    assert (info.value.code, info.value.scope, info.value.region) == ("403 Forbidden", "region", "fra-dc1")


def test_server_errors_are_transient_and_rbac_is_denied(stub: K8sStub, settings: KubernetesSettings) -> None:
    compute = adapter(settings)
    offer = slice_offer(compute, "H100", 8, 1)
    stub.fail("POST", "/deployments", 500, "InternalError", "etcdserver: request timed out")
    with pytest.raises(Transient, match="etcdserver: request timed out") as info:
        compute.create(spec_for(offer))
    assert info.value.retryable and info.value.code == "500 InternalError"
    stub.fail("GET", "/api/v1/nodes", 429, "TooManyRequests", "too many requests")
    with pytest.raises(Transient):
        compute.offers()
    stub.fail("GET", "/api/v1/pods", 403, "Forbidden",
              'pods is forbidden: User "system:serviceaccount:ops:placement" cannot list resource "pods"')
    with pytest.raises(Denied, match="cannot list resource") as denied:
        compute.offers()
    assert denied.value.scope == "account" and not denied.value.retryable
    assert compute.create(spec_for(offer)).state == "Pending"  # the failures were one-off


def test_wrong_token_is_denied(stub: K8sStub, tmp_path: Path) -> None:
    compute = adapter(settings_for(write_kubeconfig(tmp_path / "kubeconfig", stub.url, token="expired")))
    with pytest.raises(Denied, match="did not accept the credentials") as info:
        compute.offers()
    assert info.value.code == "401 Unauthorized" and "expired" not in str(info.value)


def test_unreachable_server_is_transient(tmp_path: Path) -> None:
    compute = adapter(settings_for(write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")))
    with pytest.raises(Transient, match=r"cannot reach the Kubernetes API server at http://127\.0\.0\.1:9"):
        compute.offers()


def test_missing_kubeconfig_is_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(Denied, match="cannot load the Kubernetes client configuration"):
        adapter(settings_for(tmp_path / "absent")).offers()
    # The standard chain: not in a pod, so $KUBECONFIG.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent-too"))
    with pytest.raises(Denied, match="absent-too"):
        adapter(settings_for(None, context=None)).offers()


def test_chain_reads_kubeconfig_from_the_environment(stub: K8sStub, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "env-kubeconfig", stub.url)))
    assert adapter(settings_for(None, context=None)).offers()


def test_error_mapping_of_status_objects() -> None:
    from kubernetes.client.exceptions import ApiException

    def err(code: int, reason: str, message: str, causes: list[dict[str, str]] | None = None) -> ProviderError:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
                "code": code, "details": {"causes": causes or []}}
        exc = ApiException(status=code, reason=reason, body=json.dumps(body))
        return error_from_api(exc, provider="k", region="fra-dc1", action="create Job gpu/x")

    invalid = err(422, "Invalid", 'Job.batch "x" is invalid', [
        {"field": "spec.template.spec.containers[0].image", "message": "Required value"}])
    assert type(invalid) is ProviderError and not invalid.retryable
    assert "field spec.template.spec.containers[0].image" in str(invalid) and invalid.code == "422 Invalid"
    assert type(err(404, "NotFound", "namespaces \"gpu\" not found")) is NotFound
    assert type(err(403, "Forbidden", 'jobs.batch "x" is forbidden: exceeded quota: q')) is QuotaExceeded
    assert type(err(403, "Forbidden", "cannot create jobs")) is Denied
    assert type(err(503, "ServiceUnavailable", "down")) is Transient
    assert str(err(409, "Conflict", "the object has been modified")).startswith("k fra-dc1: create Job gpu/x: conflict")


def test_stub_rejects_what_the_api_server_would(stub: K8sStub) -> None:
    def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(f"{stub.url}{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {TOKEN}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    pod = {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Always"}
    snake = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
             "spec": {"backoff_limit": 1, "template": {"spec": pod}}}
    code, answer = post(f"/apis/batch/v1/namespaces/{NS}/jobs", snake)
    assert code == 422 and answer["kind"] == "Status" and answer["reason"] == "Invalid"
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": pod}}}
    code, answer = post(f"/apis/batch/v1/namespaces/{NS}/jobs", job)
    assert code == 422 and answer["details"]["causes"][0]["field"] == "spec.template.spec.restartPolicy"
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                  "spec": {"selector": {"matchLabels": {"app": "a"}},
                           "template": {"metadata": {"labels": {"app": "b"}},
                                        "spec": {"containers": [{"name": "c", "image": "i", "resources": {
                                            "requests": {"nvidia.com/gpu": "1"}}}]}}}}
    code, answer = post(f"/apis/apps/v1/namespaces/{NS}/deployments", deployment)
    assert code == 422
    assert {c["field"] for c in answer["details"]["causes"]} == {"spec.template.metadata.labels",
                                                                 "spec.template.spec.containers[0].resources.limits"}
    assert len(stub.violations) == 4
    stub.violations.clear()
