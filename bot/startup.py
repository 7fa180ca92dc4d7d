"""The block `gitops-bot up` and `serve` print as they start: the config loaded, the repositories and
clusters it names, which secrets are set or missing and what that means, and where the bot answers."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from bot.config import ServerConfig
from bot.settings import Settings

DEFAULT_CONFIG = Path("config/bot.yaml")
ANY_ADDRESS = ("", "0.0.0.0", "::", "[::]")


@dataclass(frozen=True)
class Start:
    """What the starting command knows beyond the settings and the server config."""

    command: str
    host: str
    port: int
    redis: str
    """Where the queue is, as the block shows it: never with a password."""
    processes: str
    in_pod: bool = False
    """Whether this process runs in a Kubernetes pod, where `in_cluster` clusters work."""


def summary(start: Start, settings: Settings, server: ServerConfig,
            addresses: Callable[[], list[str]] | None = None) -> list[str]:
    """The block's lines. Secrets appear by name only. `addresses` lists this machine's own (for a
    server listening on all of them); by default they are asked of the routing table."""
    rows = [("config", _config(settings.config_path)), ("repos", _repos(server, settings.config_path)),
            ("clusters", _clusters(server, start.in_pod)), ("secrets", _secrets(settings)),
            ("redis", [start.redis]), ("processes", [start.processes])]
    hosts, reach = _reach(start.host, start.port, addresses or machine_addresses)
    rows.append(("reachable", reach))
    bases = [f"http://{_url_host(host)}:{start.port}" for host in hosts]
    rows.append(("webhooks", [f"{base}/webhooks/github   (GitHub)" for base in bases] +
                 [f"{base}/webhooks/gitlab   (GitLab)" for base in bases]))
    rows.append(("dashboard", _dashboard(start, settings, bases)))
    rows.append(("metrics", [f"{base}/metrics" for base in bases] + ["open to whoever reaches the port"]))
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"gitops-bot {start.command}: instance {settings.name!r}"]
    for label, texts in rows:
        for i, text in enumerate(texts):
            lines.append(f"  {(label if i == 0 else ''):<{width}}{text}")
    return lines


def _config(path: Path) -> list[str]:
    source = ("from GITOPS_BOT_CONFIG" if path != DEFAULT_CONFIG else
              "the default; GITOPS_BOT_CONFIG names another")
    return [f"{path.resolve()} ({source})"]


def _repos(server: ServerConfig, path: Path) -> list[str]:
    if not server.repos:
        return [f"none: every webhook is answered 200 and ignored; list your repositories under `repos` in {path}"]
    return [", ".join(server.repos), "webhooks from any other repository are answered 200 and ignored"]


def _clusters(server: ServerConfig, in_pod: bool) -> list[str]:
    if not server.clusters:
        return ["none: pull requests get diffs, and nothing deploys"]
    lines = []
    for cluster in server.clusters.values():
        problem = None
        if cluster.in_cluster:
            where = "the in-cluster service account"
            if not in_pod:
                problem = "this process is not in a pod"
        elif cluster.kubeconfig:
            where = f"kubeconfig {cluster.kubeconfig}" + (f", context {cluster.context}" if cluster.context else "")
            if not Path(cluster.kubeconfig).expanduser().is_file():
                problem = f"{cluster.kubeconfig}: no such file"
        else:
            where = "the default kubeconfig"
        lines.append(f"{cluster.name}: {where}; granted to {', '.join(cluster.repos)}")
        if problem:
            lines.append(f"  {problem}, so deploys to {cluster.name} fail")
    return lines


def _secrets(settings: Settings) -> list[str]:
    credentials = settings.credentials()
    width = max(len(c.name) for c in credentials) + 2
    return [f"{c.name:<{width}}{c.meaning}" for c in credentials]


def _reach(host: str, port: int, addresses: Callable[[], list[str]]) -> tuple[list[str], list[str]]:
    """The hosts to print in URLs, and who can connect, with what a forge on the internet needs."""
    internet = f"a forge on the internet needs a public address or a tunnel (HTTPS) to port {port}"
    if host in ANY_ADDRESS:
        ipv6 = ":" in host
        own = [a for a in addresses() if ipv6 or ":" not in a] or ["<this machine's address>"]
        return own, [f"every address of this machine ({host or '0.0.0.0'}): other machines that route to it "
                     "can connect;", internet]
    if _loopback(host):
        return [host], [f"this machine only ({host}): no forge can reach it;",
                        "forward a public HTTPS address to it with a tunnel, or start with --host 0.0.0.0"]
    ip = _ip(host)
    if ip is None:
        return [host], [f"wherever {host} resolves to this machine;", internet]
    if ip.is_global:
        return [host], [f"{host} is a public address: a forge can reach it; put HTTPS in front of it"]
    return [host], [f"{host} only, a private network's address;", internet]


def _dashboard(start: Start, settings: Settings, bases: list[str]) -> list[str]:
    if settings.dashboard_token:
        return [f"{base}/" for base in bases] + ["with GITOPS_BOT_DASHBOARD_TOKEN (Authorization: Bearer, or ?token=)"]
    host = start.host
    if host in ANY_ADDRESS or _loopback(host):
        loopback = "[::1]" if host in ("::", "[::]") else "127.0.0.1"
        return [f"http://{loopback}:{start.port}/",
                "this machine only: set GITOPS_BOT_DASHBOARD_TOKEN to open it to others with that token"]
    return [f"{base}/" for base in bases] + [
        "refuses every client: it answers only this machine's loopback, which this address is not; "
        "set GITOPS_BOT_DASHBOARD_TOKEN"]


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _loopback(host: str) -> bool:
    ip = _ip(host)
    return host == "localhost" or (ip is not None and ip.is_loopback)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def machine_addresses() -> list[str]:
    """This machine's addresses on its default routes, IPv4 first; none offline."""
    found = []
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((probe, 9))  # a datagram socket sends nothing on connect: it asks the routing table
                address = sock.getsockname()[0]
        except OSError:
            continue
        ip = _ip(address)
        if ip is not None and not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
            found.append(address)
    return found


def redis_description(url: str, embedded_directory: Path | None = None) -> str:
    """The queue's URL without its password, and where an embedded Redis keeps its data."""
    parts = urlsplit(url)
    if parts.password:
        user = parts.username or ""
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        url = urlunsplit(parts._replace(netloc=netloc))
    if embedded_directory is not None:
        return f"embedded Redis at {url}, data in {embedded_directory}"
    return f"{url} (REDIS_URL)"
