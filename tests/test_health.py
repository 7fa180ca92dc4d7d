"""bot.health: live objects, shaped as a cluster returns them, and what a user reads about each."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import pytest

from bot.health import Health, failed, health, waiting_for

NO_INFO = "no health information"
UNOBSERVED = "the controller has not seen the new spec yet"
T0, T1 = "2025-03-02T10:15:07Z", "2025-03-02T10:19:41Z"


# -- live objects -------------------------------------------------------------------------------------
def metadata(name: str, namespace: str | None = "shop", generation: int | None = 2, **extra: Any) -> dict[str, Any]:
    meta = {"name": name, "uid": "6c0b7a6e-4f3e-4bd2-9a52-1f1e0c2d9a10", "resourceVersion": "481213",
            "creationTimestamp": T0, "labels": {"app.kubernetes.io/name": name}, **extra}
    if namespace:
        meta["namespace"] = namespace
    if generation is not None:
        meta["generation"] = generation
    return meta


def condition(type_: str, status: str, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    """As controllers write them: apps/v1 ones carry lastUpdateTime too, which the rules ignore."""
    cond = {"type": type_, "status": status, "lastTransitionTime": T1}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def live(api_version: str, kind: str, meta: dict[str, Any], spec: dict[str, Any] | None = None,
         status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj = {"apiVersion": api_version, "kind": kind, "metadata": meta}
    if spec is not None:
        obj["spec"] = spec
    if status is not None:
        obj["status"] = status
    return obj


POD_TEMPLATE = {"metadata": {"labels": {"app.kubernetes.io/name": "web"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/shop/web:v2.0.1",
                                         "ports": [{"containerPort": 8080, "protocol": "TCP"}]}],
                         "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst"}}
SELECTOR = {"matchLabels": {"app.kubernetes.io/name": "web"}}
NEW_RS = "web-6f8d5b7c9d"


def deployment(status: dict[str, Any] | None, *, generation: int = 2, replicas: int | None = 3,
               **meta: Any) -> dict[str, Any]:
    spec = {"selector": SELECTOR, "template": POD_TEMPLATE, "progressDeadlineSeconds": 600,
            "revisionHistoryLimit": 10,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}
    if replicas is not None:
        spec["replicas"] = replicas
    annotations = {"deployment.kubernetes.io/revision": "2"}
    return live("apps/v1", "Deployment", metadata("web", generation=generation, annotations=annotations, **meta),
                spec, status)


def rollout(replicas: int = 3, updated: int = 3, available: int = 3, *conditions: dict[str, Any]) -> dict[str, Any]:
    status = {"observedGeneration": 2, "replicas": replicas, "updatedReplicas": updated, "readyReplicas": available,
              "availableReplicas": available,
              "conditions": list(conditions) or [
                  condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                  condition("Progressing", "True", "NewReplicaSetAvailable",
                            f'ReplicaSet "{NEW_RS}" has successfully progressed.')]}
    if replicas > available:
        status["unavailableReplicas"] = replicas - available
    return status


MID_ROLLOUT = (condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
               condition("Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{NEW_RS}" is progressing.'))
QUOTA = ('pods "web-6f8d5b7c9d-x2x7q" is forbidden: exceeded quota: compute, requested: cpu=500m, '
         'used: cpu=2, limited: cpu=2')


def statefulset(spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return live("apps/v1", "StatefulSet", metadata("db"),
                {"replicas": 3, "serviceName": "db", "selector": SELECTOR, "template": POD_TEMPLATE,
                 "podManagementPolicy": "OrderedReady", **spec},
                {"observedGeneration": 2, "availableReplicas": status.get("readyReplicas", 0),
                 "collisionCount": 0, **status})


def sts_status(ready: int = 3, updated: int = 3, current: str = "db-5d8c7b9f4",
               update: str = "db-5d8c7b9f4") -> dict[str, Any]:
    return {"replicas": 3, "readyReplicas": ready, "currentReplicas": 3, "updatedReplicas": updated,
            "currentRevision": current, "updateRevision": update}


def daemonset(status: dict[str, Any], strategy: str = "RollingUpdate") -> dict[str, Any]:
    return live("apps/v1", "DaemonSet", metadata("node-exporter", namespace="monitoring", generation=1),
                {"selector": SELECTOR, "template": POD_TEMPLATE, "revisionHistoryLimit": 10,
                 "updateStrategy": {"type": strategy}}, status)


def ds_status(updated: int = 3, available: int = 3) -> dict[str, Any]:
    return {"observedGeneration": 1, "desiredNumberScheduled": 3, "currentNumberScheduled": 3,
            "numberMisscheduled": 0, "numberReady": available, "updatedNumberScheduled": updated,
            "numberAvailable": available, **({"numberUnavailable": 3 - available} if available < 3 else {})}


def replicaset(status: dict[str, Any]) -> dict[str, Any]:
    meta = metadata(NEW_RS, generation=1, ownerReferences=[
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "controller": True,
         "blockOwnerDeletion": True, "uid": "0d3b1d6e-8a7c-4a43-bf0b-63a4a7c7c2e1"}])
    return live("apps/v1", "ReplicaSet", meta, {"replicas": 2, "selector": SELECTOR, "template": POD_TEMPLATE},
                {"observedGeneration": 1, **status})


def pod(phase: str | None, conditions: Sequence[dict[str, Any]] = (), containers: Sequence[dict[str, Any]] = (),
        **status: Any) -> dict[str, Any]:
    body = {"conditions": list(conditions), "containerStatuses": list(containers), "hostIP": "10.0.1.17",
            "qosClass": "BestEffort", "startTime": T0, **status}
    if phase:
        body["phase"] = phase
    return live("v1", "Pod", metadata("web-6f8d5b7c9d-8xk2p", generation=None), POD_TEMPLATE["spec"], body)


def container(name: str = "app", ready: bool = False, **state: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "image": "registry.example.com/shop/web:v2.0.1", "imageID": "", "ready": ready,
            "restartCount": 4 if "waiting" in state else 0, "started": ready, "state": state}


SCHEDULED = condition("PodScheduled", "True")
NOT_READY = condition("Ready", "False", "ContainersNotReady", "containers with unready status: [app]")
CRASHING = {"reason": "CrashLoopBackOff",
            "message": "back-off 5m0s restarting failed container=app pod=web-6f8d5b7c9d-8xk2p_shop(4b1c2f7e)"}
PULLING = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "registry.example.com/shop/web:v2.0.1"'}
INITIALIZING = condition("Initialized", "False", "ContainersNotInitialized",
                         "containers with incomplete status: [migrate]")
UNSCHEDULABLE = ("0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: "
                 "3 No preemption victims found for incoming pod.")


COMPLETED = "Reached expected number of succeeded pods"


def job(status: dict[str, Any] | None, suspend: bool = False) -> dict[str, Any]:
    return live("batch/v1", "Job", metadata("migrate", generation=1),
                {"backoffLimit": 6, "completions": 1, "parallelism": 1, "suspend": suspend,
                 "completionMode": "NonIndexed", "template": POD_TEMPLATE}, status)


def cronjob(suspend: bool) -> dict[str, Any]:
    return live("batch/v1", "CronJob", metadata("report", generation=1),
                {"schedule": "*/15 * * * *", "concurrencyPolicy": "Forbid", "suspend": suspend,
                 "jobTemplate": {"spec": {"template": POD_TEMPLATE}}},
                {"lastScheduleTime": T1, "lastSuccessfulTime": T1})


PV = "pvc-3f1c9a62-5e7b-4f0e-9d1a-2b6c8e4f7a90"


def pvc(phase: str, volume: str | None = PV) -> dict[str, Any]:
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}},
            "storageClassName": "standard", "volumeMode": "Filesystem"}
    if volume:
        spec["volumeName"] = volume
    status = {"phase": phase}
    if phase == "Bound":
        status.update(accessModes=["ReadWriteOnce"], capacity={"storage": "10Gi"})
    return live("v1", "PersistentVolumeClaim", metadata("data", generation=None), spec, status)


def service(type_: str, ingress: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec = {"type": type_, "clusterIP": "10.96.14.201", "clusterIPs": ["10.96.14.201"], "selector": SELECTOR,
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}
    if type_ == "LoadBalancer":
        spec["ports"][0]["nodePort"] = 31380
        spec["externalTrafficPolicy"] = "Cluster"
    return live("v1", "Service", metadata("web", generation=None), spec,
                {"loadBalancer": {"ingress": ingress} if ingress else {}})


def crd(*conditions: dict[str, Any]) -> dict[str, Any]:
    names = {"kind": "Widget", "listKind": "WidgetList", "plural": "widgets", "singular": "widget"}
    return live("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                metadata("widgets.example.com", namespace=None, generation=1),
                {"group": "example.com", "names": names, "scope": "Namespaced",
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object"}}}]},
                {"acceptedNames": names if conditions else {"kind": "", "plural": ""},
                 "conditions": list(conditions), "storedVersions": ["v1"]})


def namespace(phase: str, **meta: Any) -> dict[str, Any]:
    return live("v1", "Namespace", metadata("shop", namespace=None, generation=None, **meta),
                {"finalizers": ["kubernetes"]}, {"phase": phase})


def pdb(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    return live("policy/v1", "PodDisruptionBudget", metadata("web", generation=generation),
                {"minAvailable": 2, "selector": SELECTOR}, status)


def ingress(addresses: list[dict[str, Any]]) -> dict[str, Any]:
    rule = {"host": "shop.example.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}
    return live("networking.k8s.io/v1", "Ingress", metadata("web", generation=1),
                {"ingressClassName": "nginx", "rules": [rule]},
                {"loadBalancer": {"ingress": addresses} if addresses else {}})


def kustomization(generation: int = 3, observed: int = 3, *conditions: dict[str, Any]) -> dict[str, Any]:
    return live("kustomize.toolkit.fluxcd.io/v1", "Kustomization", metadata("apps", "flux-system", generation),
                {"interval": "10m", "path": "./apps", "prune": True,
                 "sourceRef": {"kind": "GitRepository", "name": "flux-system"}},
                {"observedGeneration": observed, "lastAttemptedRevision": "main@sha1:4c1d2e3f",
                 "conditions": list(conditions)})


NO_SECRET = "Issuing certificate as Secret does not exist"


def certificate(*conditions: dict[str, Any]) -> dict[str, Any]:
    return live("cert-manager.io/v1", "Certificate", metadata("shop-tls", generation=1),
                {"secretName": "shop-tls", "dnsNames": ["shop.example.com"],
                 "issuerRef": {"kind": "ClusterIssuer", "name": "letsencrypt"}},
                {"conditions": [{**c, "observedGeneration": 1} for c in conditions]} if conditions else None)


def apiservice(*conditions: dict[str, Any]) -> dict[str, Any]:
    return live("apiregistration.k8s.io/v1", "APIService", metadata("v1beta1.metrics.k8s.io", None, None),
                {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                 "versionPriority": 100, "service": {"name": "metrics-server", "namespace": "kube-system"}},
                {"conditions": list(conditions)})


def deleting(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"].update(deletionTimestamp=T1, deletionGracePeriodSeconds=0)
    return obj


LONG = "Helm upgrade failed for release shop/web with chart web@1.2.0: " + "x" * 300
HELMRELEASE_STALLED = live(
    "helm.toolkit.fluxcd.io/v2", "HelmRelease", metadata("web", generation=4),
    {"interval": "5m", "chart": {"spec": {"chart": "web", "version": "1.2.0"}}},
    {"observedGeneration": 4, "failures": 3, "conditions": [
        condition("Ready", "False", "InstallFailed", "Helm install failed for release shop/web with chart "
                  "web@1.2.0: context deadline exceeded"),
        condition("Stalled", "True", "RetriesExceeded", "Failed to install after 3 attempt(s)"),
        condition("Released", "False", "InstallFailed", "context deadline exceeded")]})
KNATIVE = live("serving.knative.dev/v1", "Service", metadata("hello", generation=1),
               {"template": {"spec": {"containers": [{"image": "ghcr.io/knative/helloworld-go:latest"}]}}},
               {"observedGeneration": 1, "conditions": [
                   condition("ConfigurationsReady", "False", "RevisionFailed",
                             'Revision "hello-00001" failed with message: Back-off pulling image.'),
                   condition("Ready", "False", "RevisionMissing",
                             'Configuration "hello" does not have any ready Revision.'),
                   condition("RoutesReady", "False", "RevisionMissing",
                             'Configuration "hello" does not have any ready Revision.')]})
HPA = live("autoscaling/v2", "HorizontalPodAutoscaler", metadata("web", generation=1),
           {"minReplicas": 2, "maxReplicas": 10,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
           {"currentReplicas": 3, "desiredReplicas": 3, "conditions": [
               condition("AbleToScale", "True", "ReadyForNewScale",
                         "recommended size matches current size"),
               condition("ScalingActive", "True", "ValidMetricFound",
                         "the HPA was able to successfully calculate a replica count from cpu resource")]})

SECRET_VALUE = "c3VwZXItc2VjcmV0LXZhbHVl"
SECRET = live("v1", "Secret", metadata("db-credentials", generation=None), status=None)
SECRET.update(type="Opaque", data={"password": SECRET_VALUE})
STATUSLESS = [
    SECRET,
    live("v1", "ConfigMap", metadata("web-config", generation=None)) | {"data": {"LOG_LEVEL": "info"}},
    live("v1", "ServiceAccount", metadata("web", generation=None)),
    live("rbac.authorization.k8s.io/v1", "Role", metadata("reader", generation=None))
    | {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
    live("rbac.authorization.k8s.io/v1", "RoleBinding", metadata("reader", generation=None))
    | {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
       "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}]},
    live("rbac.authorization.k8s.io/v1", "ClusterRole", metadata("reader", None, None)) | {"rules": []},
    live("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", metadata("reader", None, None))
    | {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"}},
    live("networking.k8s.io/v1", "NetworkPolicy", metadata("deny-all", generation=1),
         {"podSelector": {}, "policyTypes": ["Ingress"]}),
]


# -- health, per rule ---------------------------------------------------------------------------------
CASES = [
    # generic rules, before any kind's own
    ("deleted deployment", deleting(deployment(rollout())), "progressing", "being deleted"),
    ("deleted secret", deleting(SECRET), "progressing", "being deleted"),
    ("deleted namespace", deleting(namespace("Terminating")), "progressing", "being deleted"),
    ("unobserved custom resource", kustomization(3, 2, condition("Ready", "True", "ReconciliationSucceeded",
                                                                 "Applied revision: main@sha1:4c1d2e3f")),
     "progressing", UNOBSERVED),
    ("stalled", HELMRELEASE_STALLED, "degraded", "stalled: RetriesExceeded: Failed to install after 3 attempt(s)"),
    ("reconciling", kustomization(3, 3, condition("Reconciling", "True", "ProgressingWithRetry",
                                                  "Detecting drift for revision main@sha1:4c1d2e3f"),
                                  condition("Ready", "Unknown", "Progressing", "Reconciliation in progress")),
     "progressing", "reconciling: ProgressingWithRetry: Detecting drift for revision main@sha1:4c1d2e3f"),
    ("stalled false, reconciling false", kustomization(3, 3, condition("Stalled", "False"),
                                                       condition("Reconciling", "False"),
                                                       condition("Ready", "True", "ReconciliationSucceeded",
                                                                 "Applied revision: main@sha1:4c1d2e3f")),
     "healthy", "Applied revision: main@sha1:4c1d2e3f"),
    ("generic rules before a kind's", deployment(rollout(3, 3, 3, condition("Stalled", "True", "Blocked",
                                                                              "waiting for an approval"))),
     "degraded", "stalled: Blocked: waiting for an approval"),
    # Deployment
    ("deployment available", deployment(rollout()), "healthy", "3 of 3 replicas are available"),
    ("deployment, new spec unseen", deployment(rollout(), generation=3), "progressing", UNOBSERVED),
    ("deployment just created", deployment(None, generation=1), "progressing", UNOBSERVED),
    ("deployment updating", deployment(rollout(4, 1, 3, *MID_ROLLOUT)), "progressing",
     "1 of 3 replicas are updated"),
    ("deployment, old replicas", deployment(rollout(4, 3, 3, *MID_ROLLOUT)), "progressing",
     "1 old replicas are pending termination"),
    ("deployment, updated not available", deployment(rollout(3, 3, 2, *MID_ROLLOUT)), "progressing",
     "2 of 3 updated replicas are available"),
    ("deployment, default replicas", deployment(rollout(1, 1, 1), replicas=None), "healthy",
     "1 of 1 replicas are available"),
    ("deployment past its deadline", deployment(rollout(4, 1, 3, MID_ROLLOUT[0], condition(
        "Progressing", "False", "ProgressDeadlineExceeded", f'ReplicaSet "{NEW_RS}" has timed out progressing.'))),
     "degraded", f'it exceeded its progress deadline: ReplicaSet "{NEW_RS}" has timed out progressing.'),
    ("deployment cannot create pods", deployment(rollout(0, 0, 0, MID_ROLLOUT[1], condition(
        "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."),
        condition("ReplicaFailure", "True", "FailedCreate", QUOTA))),
     "progressing", f"0 of 3 replicas are updated: FailedCreate: {QUOTA}"),
    # StatefulSet
    ("statefulset ready", statefulset({}, sts_status()), "healthy", "3 of 3 replicas are ready"),
    ("statefulset starting", statefulset({}, sts_status(ready=1)), "progressing", "1 of 3 replicas are ready"),
    ("statefulset updating", statefulset({}, sts_status(updated=1, update="db-7b6f9c4d8")), "progressing",
     "pods are still being updated to the new revision"),
    ("statefulset partition pending", statefulset(
        {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}},
        sts_status(updated=0, update="db-7b6f9c4d8")), "progressing", "0 of 1 replicas are updated"),
    ("statefulset partition done", statefulset(
        {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}},
        sts_status(updated=1, update="db-7b6f9c4d8")), "healthy", "3 of 3 replicas are ready"),
    ("statefulset on delete", statefulset({"updateStrategy": {"type": "OnDelete"}},
                                          sts_status(ready=0, update="db-7b6f9c4d8")),
     "healthy", "its pods are updated only when deleted (OnDelete)"),
    # DaemonSet
    ("daemonset available", daemonset(ds_status()), "healthy", "3 of 3 pods are available"),
    ("daemonset updating", daemonset(ds_status(updated=1, available=3)), "progressing", "1 of 3 pods are updated"),
    ("daemonset not available", daemonset(ds_status(available=2)), "progressing",
     "2 of 3 updated pods are available"),
    ("daemonset never observed", daemonset({"currentNumberScheduled": 0, "desiredNumberScheduled": 0,
                                            "numberMisscheduled": 0, "numberReady": 0}),
     "progressing", UNOBSERVED),
    ("daemonset on delete", daemonset(ds_status(updated=0), "OnDelete"), "healthy",
     "its pods are updated only when deleted (OnDelete)"),
    # ReplicaSet
    ("replicaset available", replicaset({"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 2,
                                         "availableReplicas": 2}), "healthy", "2 of 2 replicas are available"),
    ("replicaset not available", replicaset({"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 1,
                                             "availableReplicas": 1}), "progressing", "1 of 2 replicas are available"),
    ("replicaset cannot create pods", replicaset({"replicas": 0, "conditions": [
        condition("ReplicaFailure", "True", "FailedCreate", QUOTA)]}),
     "progressing", f"0 of 2 replicas are available: FailedCreate: {QUOTA}"),
    ("replicaset extra pods", replicaset({"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 3,
                                          "availableReplicas": 3}), "progressing",
     "1 extra pods are pending termination"),
    # Pod
    ("pod ready", pod("Running", [SCHEDULED, condition("Ready", "True")],
                      [container(ready=True, running={"startedAt": T1})], podIP="10.244.1.23"), "healthy", "ready"),
    ("pod succeeded", pod("Succeeded", [SCHEDULED, condition("Ready", "False", "PodCompleted")],
                          [container(terminated={"exitCode": 0, "reason": "Completed", "finishedAt": T1})]),
     "healthy", "completed"),
    ("pod evicted", pod("Failed", [], [], reason="Evicted",
                        message="The node was low on resource: memory. Threshold quantity: 100Mi, available: 52Mi."),
     "degraded", "failed: Evicted: The node was low on resource: memory. Threshold quantity: 100Mi, available: 52Mi."),
    ("pod failed", pod("Failed", [SCHEDULED, condition("Ready", "False", "PodFailed")],
                       [container(terminated={"exitCode": 0, "reason": "Completed"}, name="sidecar"),
                        container(terminated={"exitCode": 1, "reason": "Error", "finishedAt": T1}, name="migrate")]),
     "degraded", "failed: container migrate exited with code 1"),
    ("pod crash loop", pod("Running", [SCHEDULED, NOT_READY], [container(waiting=CRASHING)]), "degraded",
     f"container app: CrashLoopBackOff: {CRASHING['message']}"),
    ("pod image pull", pod("Pending", [SCHEDULED, NOT_READY], [container(waiting=PULLING)]), "degraded",
     f"container app: ImagePullBackOff: {PULLING['message']}"),
    ("init container crash loop", pod("Pending", [SCHEDULED, INITIALIZING],
                                      [container(waiting={"reason": "PodInitializing"})],
                                      initContainerStatuses=[container("migrate", waiting=CRASHING)]),
     "degraded", f"container migrate: CrashLoopBackOff: {CRASHING['message']}"),
    ("pod unschedulable", pod("Pending", [condition("PodScheduled", "False", "Unschedulable", UNSCHEDULABLE)]),
     "degraded", f"it cannot be scheduled: Unschedulable: {UNSCHEDULABLE}"),
    ("pod creating", pod("Pending", [SCHEDULED, NOT_READY], [container(waiting={"reason": "ContainerCreating"})]),
     "progressing", "pending: its containers are starting"),
    ("pod not scheduled yet", pod("Pending"), "progressing", "pending: waiting to be scheduled"),
    ("pod not ready", pod("Running", [SCHEDULED, NOT_READY], [container(running={"startedAt": T1})]),
     "progressing", "running but not ready: containers with unready status: [app]"),
    ("pod without phase", live("v1", "Pod", metadata("web", generation=None), POD_TEMPLATE["spec"]),
     "progressing", "no phase reported yet"),
    ("pod on a lost node", pod("Unknown", [SCHEDULED, condition("Ready", "Unknown", "NodeLost")]), "degraded",
     "its node does not report on it"),
    # Job
    ("job complete", job({"startTime": T0, "completionTime": T1, "succeeded": 1, "ready": 0, "terminating": 0,
                          "uncountedTerminatedPods": {}, "conditions": [
                              condition("SuccessCriteriaMet", "True", "CompletionsReached", COMPLETED),
                              condition("Complete", "True", "CompletionsReached", COMPLETED)]}),
     "healthy", "completed"),
    ("job failed", job({"startTime": T0, "failed": 7, "ready": 0, "terminating": 0, "conditions": [
        condition("FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
        condition("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]}),
     "degraded", "failed: BackoffLimitExceeded: Job has reached the specified backoff limit"),
    ("job running", job({"startTime": T0, "active": 1, "ready": 1, "terminating": 0}), "progressing",
     "running: 1 active"),
    ("job retrying", job({"startTime": T0, "active": 1, "failed": 2, "ready": 0, "terminating": 0}),
     "progressing", "running: 1 active, 2 failed"),
    ("job not started", job(None), "progressing", "not started yet"),
    ("job suspended", job({"conditions": [condition("Suspended", "True", "JobSuspended", "Job suspended")]},
                          suspend=True), "healthy", "suspended"),
    # CronJob
    ("cronjob", cronjob(False), "healthy", "scheduled: */15 * * * *"),
    ("cronjob suspended", cronjob(True), "healthy", "suspended"),
    # PersistentVolumeClaim
    ("pvc bound", pvc("Bound"), "healthy", f"bound to {PV}"),
    ("pvc pending", pvc("Pending", None), "progressing", "waiting for a volume to be bound"),
    ("pvc lost", pvc("Lost"), "degraded", f"its volume {PV} no longer exists"),
    # Service
    ("cluster ip service", service("ClusterIP"), "healthy", "ready"),
    ("load balancer with an ip", service("LoadBalancer", [{"ip": "203.0.113.10", "ipMode": "VIP"}]), "healthy",
     "load balancer address: 203.0.113.10"),
    ("load balancer with a hostname", service("LoadBalancer", [
        {"hostname": "a1b2c3d4e5f6-1234567890.eu-west-1.elb.amazonaws.com"}]),
     "healthy", "load balancer address: a1b2c3d4e5f6-1234567890.eu-west-1.elb.amazonaws.com"),
    ("load balancer waiting", service("LoadBalancer"), "progressing", "waiting for a load balancer address"),
    ("a custom kind named Service", KNATIVE, "progressing",
     'RevisionMissing: Configuration "hello" does not have any ready Revision.'),
    # CustomResourceDefinition
    ("crd established", crd(condition("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
                            condition("Established", "True", "InitialNamesAccepted",
                                      "the initial names have been accepted")),
     "healthy", "established"),
    ("crd name conflict", crd(condition("NamesAccepted", "False", "NameConflict", '"widgets" is already in use'),
                              condition("Established", "False", "NotAccepted", "not all names are accepted")),
     "degraded", 'its names are not accepted: NameConflict: "widgets" is already in use'),
    ("crd installing", crd(condition("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
                           condition("Established", "False", "Installing", "the initial names have been accepted")),
     "progressing", "not established yet"),
    ("crd not yet looked at", crd(), "progressing", "not established yet"),
    # Namespace
    ("namespace active", namespace("Active"), "healthy", "active"),
    ("namespace terminating", namespace("Terminating"), "progressing", "being deleted"),
    # PodDisruptionBudget
    ("pdb", pdb({"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 3, "desiredHealthy": 2,
                 "expectedPods": 3, "conditions": [condition("DisruptionAllowed", "True", "SufficientPods")]}),
     "healthy", "disruptions allowed: 1 (3 pods healthy, 2 needed)"),
    ("pdb insufficient pods", pdb({"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1,
                                   "desiredHealthy": 2, "expectedPods": 3,
                                   "conditions": [condition("DisruptionAllowed", "False", "InsufficientPods")]}),
     "healthy", "disruptions allowed: 0 (1 pods healthy, 2 needed)"),
    ("pdb unobserved", pdb({"observedGeneration": 1, "disruptionsAllowed": 1}, generation=2), "progressing",
     UNOBSERVED),
    ("pdb without status", pdb(None), "unknown", NO_INFO),
    # Ingress
    ("ingress with an address", ingress([{"ip": "203.0.113.20"}]), "healthy", "address: 203.0.113.20"),
    ("ingress without one", ingress([]), "unknown", NO_INFO),
    # any other kind: standard conditions
    ("ready", certificate(condition("Ready", "True", "Ready", "Certificate is up to date and has not expired")),
     "healthy", "Certificate is up to date and has not expired"),
    ("ready without a message", certificate(condition("Ready", "True")), "healthy", "ready"),
    ("not ready", certificate(condition("Issuing", "True", "DoesNotExist", NO_SECRET),
                              condition("Ready", "False", "DoesNotExist", NO_SECRET)),
     "progressing", "DoesNotExist: Issuing certificate as Secret does not exist"),
    ("ready unknown", certificate(condition("Ready", "Unknown")), "progressing", "not ready"),
    ("available", apiservice(condition("Available", "True", "Passed", "all checks passed")), "healthy",
     "all checks passed"),
    ("not available", apiservice(condition("Available", "False", "MissingEndpoints",
                                           'endpoints for service/metrics-server in "kube-system" have no addresses')),
     "progressing", 'MissingEndpoints: endpoints for service/metrics-server in "kube-system" have no addresses'),
    ("ready before available", kustomization(3, 3, condition("Available", "True"),
                                             condition("Ready", "False", "BuildFailed", "kustomize build failed")),
     "progressing", "BuildFailed: kustomize build failed"),
    ("conditions no rule knows", HPA, "unknown", NO_INFO),
    ("custom resource without status", certificate(), "unknown", NO_INFO),
    ("long message", kustomization(3, 3, condition("Ready", "False", "UpgradeFailed", LONG)), "progressing",
     f"UpgradeFailed: {LONG}"[:199] + "…"),
    ("message on many lines", kustomization(3, 3, condition(
        "Ready", "False", "BuildFailed", "kustomize build failed:\n  accumulating resources:\n\tmissing")),
     "progressing", "BuildFailed: kustomize build failed: accumulating resources: missing"),
] + [(f"{o['kind']} has no status", o, "unknown", NO_INFO) for o in STATUSLESS]


@pytest.mark.parametrize("obj, state, message", [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_health(obj, state, message):
    assert health(obj) == Health(state, message)


def test_long_messages_are_cut_to_200_characters():
    message = health(kustomization(3, 3, condition("Ready", "False", "UpgradeFailed", LONG))).message
    assert len(message) == 200 and message.endswith("…")


def test_a_secret_is_never_quoted():
    """Not even when something put its data where conditions are read."""
    secret = copy.deepcopy(SECRET)
    secret["stringData"] = {"token": "plain-secret-token"}
    secret["status"] = {"conditions": [condition("Stalled", "True", SECRET_VALUE, "plain-secret-token"),
                                       condition("Ready", "False", SECRET_VALUE, "plain-secret-token")]}
    assert health(secret) == Health("unknown", NO_INFO)


# -- waiting and failing ------------------------------------------------------------------------------
@pytest.mark.parametrize("obj, waiting", [
    pytest.param(deployment(rollout()), None, id="healthy"),
    pytest.param(SECRET, None, id="unknown"),
    pytest.param(HPA, None, id="unknown conditions"),
    pytest.param(deployment(rollout(3, 3, 2, *MID_ROLLOUT)), "2 of 3 updated replicas are available", id="progressing"),
    pytest.param(pod("Running", [SCHEDULED, NOT_READY], [container(waiting=CRASHING)]),
                 f"container app: CrashLoopBackOff: {CRASHING['message']}", id="degraded"),
    pytest.param(service("LoadBalancer"), "waiting for a load balancer address", id="load balancer"),
    pytest.param(job({"startTime": T0, "active": 1}), "running: 1 active", id="job"),
])
def test_waiting_for(obj, waiting):
    assert waiting_for(obj) == waiting


DEADLINE = condition("Progressing", "False", "ProgressDeadlineExceeded",
                     f'ReplicaSet "{NEW_RS}" has timed out progressing.')


@pytest.mark.parametrize("obj, reason", [
    pytest.param(job({"startTime": T0, "failed": 7, "conditions": [
        condition("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]}),
        "failed: BackoffLimitExceeded: Job has reached the specified backoff limit", id="job failed"),
    pytest.param(deployment(rollout(4, 1, 3, MID_ROLLOUT[0], DEADLINE)),
                 f'it exceeded its progress deadline: ReplicaSet "{NEW_RS}" has timed out progressing.',
                 id="deployment past its deadline"),
    pytest.param(HELMRELEASE_STALLED, "stalled: RetriesExceeded: Failed to install after 3 attempt(s)", id="stalled"),
    pytest.param(crd(condition("NamesAccepted", "False", "NameConflict", '"widgets" is already in use')),
                 'its names are not accepted: NameConflict: "widgets" is already in use', id="crd names clash"),
    pytest.param(pod("Failed", [], [], reason="Evicted", message="The node was low on resource: memory."),
                 "failed: Evicted: The node was low on resource: memory.", id="pod failed"),
    # degraded, but it may recover on its own
    pytest.param(pod("Running", [SCHEDULED, NOT_READY], [container(waiting=CRASHING)]), None, id="crash loop"),
    pytest.param(pod("Pending", [SCHEDULED, NOT_READY], [container(waiting=PULLING)]), None, id="image pull"),
    pytest.param(pod("Pending", [condition("PodScheduled", "False", "Unschedulable", UNSCHEDULABLE)]), None,
                 id="unschedulable"),
    pytest.param(pvc("Lost"), None, id="volume lost"),
    pytest.param(pod("Unknown", [SCHEDULED]), None, id="node lost"),
    # the failure is not, or no longer, what the controller says now
    pytest.param(deleting(HELMRELEASE_STALLED), None, id="stalled but being deleted"),
    pytest.param(deployment(rollout(4, 1, 3, MID_ROLLOUT[0], DEADLINE), generation=3), None,
                 id="past its deadline, new spec unseen"),
    pytest.param(deployment(rollout(4, 1, 3, *MID_ROLLOUT)), None, id="progressing"),
    pytest.param(deployment(rollout()), None, id="healthy"),
    pytest.param(SECRET, None, id="unknown"),
])
def test_failed(obj, reason):
    assert failed(obj) == reason
