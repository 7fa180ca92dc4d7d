"""The Kubernetes API as a deploy needs it: a client per server-config cluster, discovery, apply, list, delete."""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import kubernetes
import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError
from kubernetes.dynamic.resource import Resource

from bot.config import Cluster

FIELD_MANAGER = "gitops-bot"
REQUEST_TIMEOUT = (10.0, 60.0)
"""Seconds to connect, and to wait for an answer, per API request."""
RETRY_PAUSES = (0.2, 1.0)
"""Pauses before each retry of a transient failure. Every call we make is idempotent (GET, LIST,
server-side apply, DELETE), so retrying one cannot do anything twice."""
TRANSIENT = {429, 500, 502, 503, 504}
T = TypeVar("T")


class ClusterError(Exception):
    """A cluster call failed. The message names the call and the API's reason, never object content.

    `temporary`: the cluster was briefly unable to answer (a 429 or 5xx, a refused or timed-out
    connection) even after our retries; a 4xx is the API server's considered answer, and is not.
    `causes`: the (field, message) pairs the API server gave for a refusal. The messages may quote
    the object's values, so they are for the caller to show only where values may be shown.
    """

    def __init__(self, message: str, status: int | None = None, temporary: bool = False,
                 causes: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status, self.temporary, self.causes = status, temporary, causes


def _plain(_client: Any, data: Any) -> Any:
    """A serializer for the dynamic client: keep the JSON as plain dicts (faster, and what we plan on)."""
    return data


def _status(err: ApiException) -> dict[str, Any]:
    """The `kind: Status` body of an API error; empty when it sent none."""
    try:
        status = json.loads(err.body or "{}")
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def _reason(err: ApiException) -> str:
    """The API's reason and the fields it names. Its `message` can quote values, so it is left out,
    and so is a field's map key (`data[…]`): an invalid Secret key may be a value put there by mistake."""
    status = _status(err)
    text = f"{status.get('reason') or err.reason or 'error'} ({err.status})"
    details = status.get("details") or {}
    if details.get("kind") and details.get("name"):
        text += f": {details['kind']} {details['name']}"
    fields = [_SUBSCRIPT.sub(_index_only, str(c["field"])) for c in details.get("causes") or []
              if isinstance(c, dict) and c.get("field")]
    return text + (f" at {', '.join(fields[:5])}" if fields else "")


def _causes(err: ApiException) -> tuple[tuple[str, str], ...]:
    """Each cause of a refusal as (field, message), in the API's own words (see `ClusterError.causes`)."""
    details = _status(err).get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    return tuple((str(c.get("field") or ""), str(c.get("message") or "")) for c in causes or []
                 if isinstance(c, dict) and (c.get("field") or c.get("message")))


_SUBSCRIPT = re.compile(r"\[([^\]]*)\]")


def _index_only(subscript: re.Match[str]) -> str:
    """A list index stays (`containers[0]`); a map key does not."""
    return subscript[0] if subscript[1].isdigit() else "[…]"


class ClusterClient:
    """One cluster through the official client. Counts its write requests (dry runs excluded)."""

    def __init__(self, api: ApiClient, name: str):
        self.api, self.name, self.writes = api, name, 0
        # A private discovery cache: the default one is shared by every process on the host.
        self._cache = tempfile.TemporaryDirectory(prefix="gitops-bot-discovery-")
        try:
            self.dyn = self._call("discover the API", lambda: DynamicClient(
                api, cache_file=str(Path(self._cache.name) / "discovery.json")))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.api.close()
        self._cache.cleanup()

    def __enter__(self) -> "ClusterClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Callable[[], T], write: bool = False) -> T:
        for pause in (*RETRY_PAUSES, None):
            self.writes += write
            try:
                return fn()
            except ApiException as err:
                if err.status not in TRANSIENT or pause is None:
                    raise ClusterError(f"{what}: {_reason(err)}", err.status, err.status in TRANSIENT,
                                       _causes(err)) from None
            except (urllib3.exceptions.HTTPError, OSError) as err:
                if pause is None:
                    raise ClusterError(f"{what}: cluster {self.name!r} is unreachable ({type(err).__name__})",
                                       temporary=True) from None
            time.sleep(pause)
        raise AssertionError("unreachable")

    # -- discovery -----------------------------------------------------------------------------------
    def resource(self, group: str, kind: str, version: str | None = None) -> Resource | None:
        """The API resource for a kind (at `version`, or the group's preferred one); None if not served."""
        # Naming the prefix keeps the lazy discoverer from loading every group that has a matching version.
        query: dict[str, Any] = {"prefix": "apis" if group else "api", "group": group, "kind": kind}
        query.update({"api_version": version} if version else {"preferred": True})
        try:
            return self._call(f"discover {kind}", lambda: self.dyn.resources.get(**query))
        except (ResourceNotFoundError, ResourceNotUniqueError):
            return None  # the discoverer looked again before it said so: a CRD's new kind is found

    # -- objects -------------------------------------------------------------------------------------
    def list(self, resource: Resource, selector: str) -> list[dict[str, Any]]:
        """Every object of a kind in all namespaces matching the label selector, `apiVersion` and `kind` set."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = self._call(f"list {resource.kind}", lambda: resource.get(
                label_selector=selector, limit=500, _continue=token, serializer=_plain,
                _request_timeout=REQUEST_TIMEOUT))
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                # List items carry no apiVersion or kind on a real API server.
                return [{**item, "apiVersion": resource.group_version, "kind": resource.kind} for item in items]

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call(f"get {resource.kind} {name}", lambda: resource.get(
                name=name, namespace=namespace or None, serializer=_plain, _request_timeout=REQUEST_TIMEOUT))
        except ClusterError as err:
            if err.status == 404:
                return None
            raise

    def apply(self, resource: Resource, body: dict[str, Any], what: str, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply as `gitops-bot`, taking over fields other managers hold (Git is the truth)."""
        meta = body["metadata"]
        return self._call(f"apply {what}", lambda: resource.server_side_apply(
            body=body, name=meta["name"], namespace=meta.get("namespace") if resource.namespaced else None,
            field_manager=FIELD_MANAGER, force_conflicts=True, dry_run="All" if dry_run else None,
            serializer=_plain, _request_timeout=REQUEST_TIMEOUT), write=not dry_run)

    def delete(self, resource: Resource, namespace: str, name: str, what: str, dry_run: bool = False) -> bool:
        """Delete in the background (dependents go after); False if it was already gone."""
        try:
            self._call(f"delete {what}", lambda: resource.delete(
                name=name, namespace=namespace or None, propagation_policy="Background",
                dry_run="All" if dry_run else None, serializer=_plain, _request_timeout=REQUEST_TIMEOUT),
                write=not dry_run)
        except ClusterError as err:
            if err.status == 404:
                return False
            raise
        return True


def connect(cluster: Cluster) -> ClusterClient:
    """A client for a cluster of the server config: its kubeconfig and context, or the pod's service account."""
    if cluster.kubeconfig and not Path(cluster.kubeconfig).expanduser().is_file():
        raise ClusterError(f"cluster {cluster.name!r}: its kubeconfig {cluster.kubeconfig} does not exist on this "
                           "machine (the server config names it)")
    try:
        if cluster.in_cluster:
            configuration = kubernetes.client.Configuration()
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            api = ApiClient(configuration)
        else:
            # persist_config=False: refreshed credentials are never written back into the operator's file.
            api = kubernetes.config.new_client_from_config(config_file=cluster.kubeconfig, context=cluster.context,
                                                           persist_config=False)
    except (ConfigException, OSError, ValueError) as err:
        where = " (in_cluster: this process does not run in a Kubernetes pod)" if cluster.in_cluster else ""
        raise ClusterError(f"cluster {cluster.name!r}: cannot load its credentials{where}: {err}") from None
    return ClusterClient(api, cluster.name)
