"""The health of any live object, judged by the rules of kstatus (sigs.k8s.io/cli-utils/pkg/kstatus).

Pure functions of the object as the API returns it. kstatus' statuses map onto ours: Current is
`healthy`, InProgress and Terminating are `progressing`, Failed is `degraded`. The rules run in
kstatus' order: the generic ones (being deleted, a spec not yet observed, the `Stalled` and
`Reconciling` conditions), then a rule per kind, then the `Ready` (or `Available`) condition.

Where we part from kstatus, and why:
- Objects that have no status at all (ConfigMap, Secret, ServiceAccount, the RBAC kinds,
  NetworkPolicy) are `unknown`, "no health information". kstatus calls them Current because they
  exist, which tells a user nothing; neither state makes a deploy wait. A Secret's health never
  reads anything but its metadata, so no message can quote its data.
- Objects kstatus calls Current only because no rule knows them (no status, no known condition)
  are `unknown` too. An Ingress is `healthy` once it has an address, else `unknown`: kstatus has no
  Ingress rule, and many controllers never publish an address, so an Ingress is never waited for.
- A PodDisruptionBudget without a status is `unknown`; with one it is `healthy`, as in kstatus.
- A Job runs until Complete (kstatus calls a started Job Current): a deploy waits for it.
- A LoadBalancer Service waits for `status.loadBalancer.ingress` (kstatus only for a cluster IP).
- A Pod that Failed is `degraded` (kstatus: Current, since it has finished). A container, init
  containers included, waiting in CrashLoopBackOff, ImagePullBackOff, ErrImagePull,
  InvalidImageName or CreateContainerConfigError makes it `degraded` (kstatus: a crash loop only).
  An unschedulable Pod is `degraded` at once (kstatus waits 15 s of its age, which would make
  health depend on the clock).
- A PersistentVolumeClaim that is Lost is `degraded` (kstatus: InProgress, as for any phase but Bound).
- A Deployment or ReplicaSet that cannot create pods (`ReplicaFailure`) stays `progressing`, as a
  ReplicaSet does in kstatus, and says why.
- Deployment, StatefulSet and DaemonSet follow `kubectl rollout status`. kstatus also wants a
  Deployment's `Available` condition and a few counts that agree with these once a rollout is done.

`failed` is kstatus' Failed where nothing will change without a new spec: a `Stalled` condition,
a Deployment past its progress deadline, a failed Job, a CRD whose names clash or that failed to
be established, and a Pod whose phase is Failed (a terminal phase). A crash loop, an image pull error, an unschedulable Pod and a
lost volume are `degraded` but not `failed`: they may recover on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Literal

from bot.diff import group_of

State = Literal["healthy", "progressing", "degraded", "unknown"]
MESSAGE_LIMIT = 200
"""Characters of a message quoted from the cluster (a condition's, a container's), so one object
cannot flood a comment."""
NO_INFORMATION = "no health information"
UNOBSERVED = "the controller has not seen the new spec yet"
NO_STATUS = {("", "ConfigMap"), ("", "Secret"), ("", "ServiceAccount"), ("networking.k8s.io", "NetworkPolicy")} | {
    ("rbac.authorization.k8s.io", kind) for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")}
"""Kinds with no status to judge; their health is `unknown` whatever they hold."""
BROKEN_CONTAINER = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                              "CreateContainerConfigError"})
"""Reasons a container waits that need someone to act, or at least will not pass by themselves soon."""


@dataclass(frozen=True)
class Health:
    state: State
    message: str
    """Why, in words a user understands; for `unknown`: "no health information"."""


def health(obj: dict[str, Any]) -> Health:
    """How a live object is doing, as kstatus judges it (see the module docstring)."""
    kind = _kind(obj)
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return Health("progressing", "being deleted")
    if kind in NO_STATUS:
        return Health("unknown", NO_INFORMATION)
    return _generic(obj) or RULES.get(kind, _conditions)(obj)


def waiting_for(obj: dict[str, Any]) -> str | None:
    """None once an object needs no more waiting for (healthy, or nothing to tell); otherwise why."""
    verdict = health(obj)
    return None if verdict.state in ("healthy", "unknown") else verdict.message


def failed(obj: dict[str, Any]) -> str | None:
    """Why an object is degraded for good, so that waiting longer is pointless; None if it is not."""
    verdict = health(obj)
    return verdict.message if verdict.state == "degraded" and _for_good(obj) else None


# -- generic rules ------------------------------------------------------------------------------------
def _generic(obj: dict[str, Any]) -> Health | None:
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return Health("progressing", UNOBSERVED)
    stalled = _true(obj, "Stalled")
    if stalled:
        return Health("degraded", f"stalled: {_said(stalled)}")
    reconciling = _true(obj, "Reconciling")
    if reconciling:
        return Health("progressing", f"reconciling: {_said(reconciling)}")
    return None


def _conditions(obj: dict[str, Any]) -> Health:
    """Kinds no rule knows, custom resources included: their `Ready` condition, else `Available`."""
    for kind in ("Ready", "Available"):
        condition = _condition(obj, kind)
        if condition.get("status") == "True":
            return Health("healthy", _quote(condition.get("message") or "") or kind.lower())
        if condition.get("status") in ("False", "Unknown"):
            return Health("progressing", _said(condition, f"not {kind.lower()}"))
    return Health("unknown", NO_INFORMATION)


# -- workloads: the checks of `kubectl rollout status` -----------------------------------------------
def _deployment(obj: dict[str, Any]) -> Health:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if _unobserved(obj):
        return Health("progressing", UNOBSERVED)
    progressing = _condition(obj, "Progressing")
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        detail = _quote(progressing.get("message") or "")
        return Health("degraded", "it exceeded its progress deadline" + (f": {detail}" if detail else ""))
    want, updated = spec.get("replicas", 1), status.get("updatedReplicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < want:
        return _creating(obj, f"{updated} of {want} replicas are updated")
    if status.get("replicas", 0) > updated:
        return Health("progressing", f"{status['replicas'] - updated} old replicas are pending termination")
    if available < updated:
        return _creating(obj, f"{available} of {updated} updated replicas are available")
    return Health("healthy", f"{available} of {want} replicas are available")


def _statefulset(obj: dict[str, Any]) -> Health:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    strategy = spec.get("updateStrategy") or {}
    if _unobserved(obj):
        return Health("progressing", UNOBSERVED)
    if strategy.get("type") == "OnDelete":
        return Health("healthy", "its pods are updated only when deleted (OnDelete)")
    want, ready = spec.get("replicas", 1), status.get("readyReplicas", 0)
    if ready < want:
        return Health("progressing", f"{ready} of {want} replicas are ready")
    partition = (strategy.get("rollingUpdate") or {}).get("partition") or 0
    if partition and status.get("updatedReplicas", 0) < want - partition:
        return Health("progressing", f"{status.get('updatedReplicas', 0)} of {want - partition} replicas are updated")
    if not partition and status.get("updateRevision") != status.get("currentRevision"):
        return Health("progressing", "pods are still being updated to the new revision")
    return Health("healthy", f"{ready} of {want} replicas are ready")


def _daemonset(obj: dict[str, Any]) -> Health:
    status = obj.get("status") or {}
    if _unobserved(obj):
        return Health("progressing", UNOBSERVED)
    if ((obj.get("spec") or {}).get("updateStrategy") or {}).get("type") == "OnDelete":
        return Health("healthy", "its pods are updated only when deleted (OnDelete)")
    want = status.get("desiredNumberScheduled", 0)
    updated, available = status.get("updatedNumberScheduled", 0), status.get("numberAvailable", 0)
    if updated < want:
        return Health("progressing", f"{updated} of {want} pods are updated")
    if available < want:
        return Health("progressing", f"{available} of {want} updated pods are available")
    return Health("healthy", f"{available} of {want} pods are available")


def _replicaset(obj: dict[str, Any]) -> Health:
    want, status = (obj.get("spec") or {}).get("replicas", 1), obj.get("status") or {}
    available = status.get("availableReplicas", 0)
    # kstatus' checks; availability first, as the one a user understands
    for field, word in (("availableReplicas", "available"), ("readyReplicas", "ready"),
                        ("fullyLabeledReplicas", "labelled")):
        if status.get(field, 0) < want:
            return _creating(obj, f"{status.get(field, 0)} of {want} replicas are {word}")
    if status.get("replicas", 0) > want:
        return Health("progressing", f"{status['replicas'] - want} extra pods are pending termination")
    return Health("healthy", f"{available} of {want} replicas are available")


def _unobserved(obj: dict[str, Any]) -> bool:
    """A workload's controller always writes `observedGeneration`: none yet means not seen yet."""
    generation = (obj.get("metadata") or {}).get("generation", 0)
    return (obj.get("status") or {}).get("observedGeneration", 0) < generation


def _creating(obj: dict[str, Any], waiting: str) -> Health:
    """Replicas still missing, with the reason the controller cannot create them, if it said one."""
    failure = _true(obj, "ReplicaFailure")
    return Health("progressing", f"{waiting}: {_said(failure)}" if failure else waiting)


# -- other built-in kinds -----------------------------------------------------------------------------
def _pod(obj: dict[str, Any]) -> Health:
    status = obj.get("status") or {}
    phase = status.get("phase")
    if phase == "Succeeded":
        return Health("healthy", "completed")
    if phase == "Failed":
        return Health("degraded", f"failed: {_pod_failure(status)}")
    if phase == "Unknown":
        return Health("degraded", "its node does not report on it")
    if _condition(obj, "Ready").get("status") == "True":
        return Health("healthy", "ready")
    broken = _broken_container(status)
    if broken:
        return Health("degraded", broken)
    scheduled = _condition(obj, "PodScheduled")
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return Health("degraded", f"it cannot be scheduled: {_said(scheduled)}")
    if phase == "Running":
        detail = _quote(_condition(obj, "Ready").get("message") or "")
        return Health("progressing", "running but not ready" + (f": {detail}" if detail else ""))
    if phase == "Pending":
        started = scheduled.get("status") == "True"
        return Health("progressing", "pending: its containers are starting" if started else
                      "pending: waiting to be scheduled")
    return Health("progressing", "no phase reported yet")


def _broken_container(status: dict[str, Any]) -> str | None:
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in BROKEN_CONTAINER:
            return f"container {container.get('name')}: {_said(waiting)}"
    return None


def _pod_failure(status: dict[str, Any]) -> str:
    if status.get("reason") or status.get("message"):
        return _said(status)
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        ended = (container.get("state") or {}).get("terminated") or {}
        if ended.get("exitCode"):
            return f"container {container.get('name')} exited with code {ended['exitCode']}"
    return "its containers did not succeed"


def _job(obj: dict[str, Any]) -> Health:
    status = obj.get("status") or {}
    if _true(obj, "Complete"):
        return Health("healthy", "completed")
    failure = _true(obj, "Failed")
    if failure:
        return Health("degraded", f"failed: {_said(failure)}")
    if _true(obj, "Suspended") and (obj.get("spec") or {}).get("suspend"):
        return Health("healthy", "suspended")
    if not status.get("startTime"):
        return Health("progressing", "not started yet")
    failures = f", {status['failed']} failed" if status.get("failed") else ""
    return Health("progressing", f"running: {status.get('active', 0)} active{failures}")


def _cronjob(obj: dict[str, Any]) -> Health:
    spec = obj.get("spec") or {}
    return Health("healthy", "suspended" if spec.get("suspend") else f"scheduled: {spec.get('schedule')}")


def _pvc(obj: dict[str, Any]) -> Health:
    phase = (obj.get("status") or {}).get("phase")
    volume = (obj.get("spec") or {}).get("volumeName")
    if phase == "Bound":
        return Health("healthy", f"bound to {volume}" if volume else "bound")
    if phase == "Lost":
        return Health("degraded", f"its volume {volume} no longer exists" if volume else "its volume no longer exists")
    return Health("progressing", "waiting for a volume to be bound")


def _service(obj: dict[str, Any]) -> Health:
    if (obj.get("spec") or {}).get("type") != "LoadBalancer":
        return Health("healthy", "ready")
    address = _address(obj)
    if address:
        return Health("healthy", f"load balancer address: {address}")
    return Health("progressing", "waiting for a load balancer address")


def _ingress(obj: dict[str, Any]) -> Health:
    address = _address(obj)
    return Health("healthy", f"address: {address}") if address else Health("unknown", NO_INFORMATION)


def _address(obj: dict[str, Any]) -> str | None:
    entries = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    addresses = [e.get("ip") or e.get("hostname") for e in entries if e.get("ip") or e.get("hostname")]
    return ", ".join(addresses) or None


def _crd(obj: dict[str, Any]) -> Health:
    names, established = _condition(obj, "NamesAccepted"), _condition(obj, "Established")
    if names.get("status") == "False":
        return Health("degraded", f"its names are not accepted: {_said(names)}")
    if established.get("status") == "False" and established.get("reason") != "Installing":
        return Health("degraded", f"not established: {_said(established)}")
    if established.get("status") == "True":
        return Health("healthy", "established")
    return Health("progressing", "not established yet")


def _namespace(obj: dict[str, Any]) -> Health:
    phase = (obj.get("status") or {}).get("phase")
    if phase == "Active":
        return Health("healthy", "active")
    if phase == "Terminating":
        return Health("progressing", "being deleted")
    return Health("unknown", NO_INFORMATION)


def _pdb(obj: dict[str, Any]) -> Health:
    """Healthy once the disruption controller has counted its pods, as kstatus has it."""
    status = obj.get("status")
    if not status:
        return Health("unknown", NO_INFORMATION)
    healthy, needed = status.get("currentHealthy", 0), status.get("desiredHealthy", 0)
    return Health("healthy", f"disruptions allowed: {status.get('disruptionsAllowed', 0)} "
                             f"({healthy} pods healthy, {needed} needed)")


RULES: dict[tuple[str, str], Callable[[dict[str, Any]], Health]] = {
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("apps", "ReplicaSet"): _replicaset,
    ("", "Pod"): _pod,
    ("batch", "Job"): _job,
    ("batch", "CronJob"): _cronjob,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "Service"): _service,
    ("", "Namespace"): _namespace,
    ("networking.k8s.io", "Ingress"): _ingress,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
    ("policy", "PodDisruptionBudget"): _pdb,
}
"""Kinds by (group, kind): a custom resource named `Service` is not a core Service."""


def _for_good(obj: dict[str, Any]) -> bool:
    """Of degraded objects, those kstatus calls Failed that will not recover without a new spec."""
    kind = _kind(obj)
    if _true(obj, "Stalled") or kind == ("apiextensions.k8s.io", "CustomResourceDefinition"):
        return True
    if kind == ("apps", "Deployment"):
        return _condition(obj, "Progressing").get("reason") == "ProgressDeadlineExceeded"
    if kind == ("batch", "Job"):
        return bool(_true(obj, "Failed"))
    return kind == ("", "Pod") and (obj.get("status") or {}).get("phase") == "Failed"


# -- reading ------------------------------------------------------------------------------------------
def _kind(obj: dict[str, Any]) -> tuple[str, str]:
    return group_of(obj.get("apiVersion") or ""), obj.get("kind") or ""


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if isinstance(c, dict) and c.get("type") == kind), {})


def _true(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    condition = _condition(obj, kind)
    return condition if condition.get("status") == "True" else None


def _said(source: dict[str, Any], fallback: str = "no reason given") -> str:
    """`Reason: message` of a condition (or a container's waiting state), cut to a readable length."""
    reason, message = source.get("reason") or "", source.get("message") or ""
    return _quote(f"{reason}: {message}" if reason and message else reason or message) or fallback


def _quote(text: str) -> str:
    """Cluster text on one line, at most MESSAGE_LIMIT characters."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT - 1] + "…"
