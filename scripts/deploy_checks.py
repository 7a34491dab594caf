#!/usr/bin/env python3
"""Consistency checks of everything that ships the services: the Kubernetes manifests (as
rendered by Kustomize), compose.yaml, the Dockerfile, the CI workflows and deploy/README.md,
against each other and against the service binaries themselves.

scripts/check-deploy.sh renders the overlays and runs this with the rendered files; run by hand:

    scripts/deploy_checks.py --rendered dev=FILE --rendered prod=FILE [--rendered keda=FILE] \
        --bin-dir target/debug

What it checks (each failure names the object and the rule):
  workloads   every Deployment and StatefulSet: liveness, readiness and startup probes (the
              services' on the real /healthz routes of crates/platform), CPU and memory requests
              and limits, non-root user, read-only root filesystem, no privilege escalation, all
              capabilities dropped, RuntimeDefault seccomp, explicit image tags (never latest),
              its ServiceAccount, a shutdown budget that fits the termination grace period
  services    every service binary under services/ has a Deployment, Service, ServiceAccount,
              PodDisruptionBudget, HorizontalPodAutoscaler (on CPU) and a NetworkPolicy of its
              own; selectors, ports, listen addresses and probe ports agree
  network     default deny; the service-to-service calls the NetworkPolicies allow are exactly
              the ones the services are configured to make (their *_URL settings) and the
              architecture names; the services whose Secret URLs point at NATS, PostgreSQL and
              Redis are the architecture's owners of each, and only they reach them
  config      every ConfigMap key and Secret key referenced exists or is documented; no Secret
              with values is rendered; the quota holds every autoscaler at its maximum
  env drift   the environment variables set by the manifests, compose.yaml and the Dockerfile
              are ones the binaries accept (their --help), the settings the distributed mode
              needs (listen address, every store and bus URL, the flags of
              scripts/run-distributed.sh) are all set, and `fabrikam SERVICE` accepts the same
              variables as `fabrikam-SERVICE`
  dockerfile  one build stage per service running scripts/build-service.sh, one runtime stage
              per service, non-root numeric USER, OCI labels, no HEALTHCHECK, pinned bases
  compose     every service of the system, hardened like the pods, only the gateway published,
              the service URLs are the architecture's calls, to where each service listens
  workflows   every `run:` step is a script of this repository, jobs have timeouts, actions are
              pinned, release tags are release/<service>/<semver>, deploys wait for approval
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# The calls the architecture makes (ARCHITECTURE.md, "A delivery request's path"; README's picture;
# the supervisor's compensations go to the same three services as the workflow's steps; the
# gateway routes /api/deliveryhistory to the delivery history).
CALLS = {
    "gateway": {"ingestion", "delivery", "package", "dronescheduler", "deliveryhistory", "account"},
    "workflow": {"package", "dronescheduler", "delivery", "account"},
    "supervisor": {"package", "dronescheduler", "delivery"},
}
# Who uses each server, in the architecture. NATS: the delivery-requests queue (ingestion
# publishes, the workflow consumes), drone-events (the drone scheduler's flight clock publishes,
# delivery consumes) and delivery-events (delivery publishes, the delivery history consumes).
# PostgreSQL: one database per service that keeps its data there (the supervisor shares the
# workflow's). Redis: the delivery service's deliveries.
BACKEND_OWNERS = {
    "nats": {"ingestion", "workflow", "dronescheduler", "delivery", "deliveryhistory"},
    "postgres": {"package", "dronescheduler", "ingestion", "workflow", "supervisor", "deliveryhistory", "account"},
    "redis": {"delivery"},
}
# Which server each Secret key of fabrikam-backends points at.
BACKEND_OF_SECRET_KEY = {
    "bus-url": "nats",
    "delivery-db-url": "redis",
    "package-db-url": "postgres",
    "dronescheduler-db-url": "postgres",
    "ingestion-db-url": "postgres",
    "workflow-db-url": "postgres",
    "deliveryhistory-db-url": "postgres",
    "account-db-url": "postgres",
}
BACKEND_PORT = {"nats": 4222, "postgres": 5432, "redis": 6379}
BACKEND_SCHEME = {"nats": "nats://", "postgres": "postgres://", "redis": "redis://"}
# Read by the libraries, not flags: the log filter and OpenTelemetry's standard variables.
EXTRA_ENV = {"RUST_LOG", "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER",
             "OTEL_TRACES_SAMPLER_ARG", "OTEL_RESOURCE_ATTRIBUTES"}


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    checks: int = 0
    group: str = ""

    def section(self, name: str) -> None:
        self.group = name

    def check(self, ok: bool, message: str) -> bool:
        self.checks += 1
        if not ok:
            self.errors.append(f"[{self.group}] {message}")
        return ok


# ---------------------------------------------------------------- inputs


def services() -> dict[str, str]:
    """Every service binary, by the name of its image, Deployment and Dockerfile stage (the binary's
    name without `fabrikam-`) -> binary name, from services/*/Cargo.toml. Most crates have one;
    the workflow's has two (fabrikam-workflow, fabrikam-supervisor)."""
    found = {}
    for manifest in sorted((ROOT / "services").glob("*/Cargo.toml")):
        data = tomllib.loads(manifest.read_text())
        for b in data.get("bin", []) or [{"name": data["package"]["name"]}]:
            found[b["name"].removeprefix("fabrikam-")] = b["name"]
    return found


def crate_of(name: str) -> str:
    """The crate (directory under services/) a service binary comes from."""
    for manifest in sorted((ROOT / "services").glob("*/Cargo.toml")):
        data = tomllib.loads(manifest.read_text())
        if f"fabrikam-{name}" in [b["name"] for b in data.get("bin", [])]:
            return manifest.parent.name
    return name


def load_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d]


@dataclass
class Option:
    flag: str
    env: str | None
    default: str | None


def parse_help(text: str) -> dict[str, Option]:
    """Options of a clap --help (long form): flag -> Option(env, default)."""
    options: dict[str, Option] = {}
    current: Option | None = None
    for line in text.splitlines():
        m = re.match(r"^\s{2,8}(?:-\w, )?--([a-z0-9][a-z0-9-]*)", line)
        if m:
            current = Option(m.group(1), None, None)
            options[current.flag] = current
            continue
        if current is None:
            continue
        m = re.search(r"\[env: ([A-Z0-9_]+)[=\]]", line)
        if m:
            current.env = m.group(1)
        m = re.search(r"\[default: ([^\]]*)\]", line)
        if m:
            current.default = m.group(1)
    return options


def binary_options(bin_dir: Path, argv: list[str]) -> dict[str, Option]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    out = subprocess.run([str(bin_dir / argv[0]), *argv[1:], "--help"], capture_output=True, text=True,
                         env=env, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"deploy_checks: {' '.join(argv)} --help failed: {out.stderr.strip()}")
    return parse_help(out.stdout)


# ---------------------------------------------------------------- Kubernetes helpers


def quantity(value) -> float:
    """CPU in cores or memory in bytes."""
    s = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * factor
    return float(s)


def matches(selector: dict | None, labels: dict) -> bool:
    """Label selector semantics; an empty selector matches everything."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass
class Workload:
    kind: str
    name: str
    obj: dict
    labels: dict
    pod: dict

    @property
    def containers(self) -> list[dict]:
        return self.pod.get("containers") or []

    def port(self, ref) -> int | None:
        for c in self.containers:
            for p in c.get("ports") or []:
                if ref in (p.get("name"), p.get("containerPort")):
                    return p["containerPort"]
        return None

    def ports(self) -> list[int]:
        return [p["containerPort"] for c in self.containers for p in c.get("ports") or []]


class Rendered:
    def __init__(self, name: str, docs: list[dict]):
        self.name = name
        self.docs = docs
        ns = [d for d in docs if d["kind"] == "Namespace"]
        self.namespace = ns[0]["metadata"]["name"] if ns else None
        self.namespace_labels = dict(ns[0]["metadata"].get("labels") or {}) if ns else {}
        if self.namespace:
            self.namespace_labels["kubernetes.io/metadata.name"] = self.namespace
        self.workloads = [
            Workload(d["kind"], d["metadata"]["name"], d, d["spec"]["template"]["metadata"].get("labels") or {},
                     d["spec"]["template"]["spec"])
            for d in docs
            if d["kind"] in ("Deployment", "StatefulSet")
        ]

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict | None:
        for d in self.docs:
            if d["kind"] == kind and d["metadata"]["name"] == name:
                return d
        return None

    def workload(self, name: str) -> Workload | None:
        for w in self.workloads:
            if w.name == name:
                return w
        return None

    # -- network policies, for pods of this namespace

    def _peer_matches(self, peer: dict, target: Workload) -> bool:
        if "ipBlock" in peer:
            return False
        if "namespaceSelector" in peer and not matches(peer["namespaceSelector"], self.namespace_labels):
            return False
        return matches(peer.get("podSelector"), target.labels) if "podSelector" in peer else True

    @staticmethod
    def _port_matches(ports: list[dict] | None, target: Workload, port: int) -> bool:
        if not ports:
            return True
        for p in ports:
            if "port" not in p:
                return True
            if target.port(p["port"]) == port or p["port"] == port:
                return True
        return False

    def allowed(self, direction: str, subject: Workload, peer: Workload, port_owner: Workload, port: int) -> bool:
        policy_type = "Egress" if direction == "egress" else "Ingress"
        key = "to" if direction == "egress" else "from"
        policies = [p for p in self.of_kind("NetworkPolicy")
                    if policy_type in (p["spec"].get("policyTypes") or [])
                    and matches(p["spec"].get("podSelector"), subject.labels)]
        if not policies:
            return True  # not isolated in this direction
        for p in policies:
            for rule in p["spec"].get(direction) or []:
                peers = rule.get(key)
                if peers and not any(self._peer_matches(x, peer) for x in peers):
                    continue
                if self._port_matches(rule.get("ports"), port_owner, port):
                    return True
        return False

    def external_egress(self, src: Workload) -> list[tuple[str, list]]:
        """Egress rules of src that leave the namespace: (peer description, ports)."""
        out = []
        for p in self.of_kind("NetworkPolicy"):
            if "Egress" not in (p["spec"].get("policyTypes") or []) or not matches(p["spec"].get("podSelector"), src.labels):
                continue
            for rule in p["spec"].get("egress") or []:
                ports = sorted(x.get("port") for x in rule.get("ports") or [])
                for peer in rule.get("to") or [{"everything": True}]:
                    if "ipBlock" in peer:
                        out.append((f"ipBlock {peer['ipBlock']['cidr']}", ports))
                    elif "everything" in peer:
                        out.append(("anywhere", ports))
                    elif "namespaceSelector" in peer and not matches(peer["namespaceSelector"], self.namespace_labels):
                        labels = (peer["namespaceSelector"].get("matchLabels") or {})
                        out.append((f"namespace {labels.get('kubernetes.io/metadata.name', labels)}", ports))
        return out


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


def literal(env: dict, name: str) -> str | None:
    e = env.get(name)
    return None if e is None else e.get("value")


# ---------------------------------------------------------------- checks


def check_workloads(r: Report, k: Rendered, health_routes: set[str], svc: dict[str, str],
                    options: dict[str, dict[str, Option]]) -> None:
    r.section(f"{k.name}: workloads")
    service_accounts = {d["metadata"]["name"]: d for d in k.of_kind("ServiceAccount")}
    for w in k.workloads:
        where = f"{w.kind} {w.name}"
        pod = w.pod
        psc = pod.get("securityContext") or {}
        r.check(psc.get("runAsNonRoot") is True, f"{where}: pod securityContext.runAsNonRoot must be true")
        r.check(isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0, f"{where}: pod runAsUser must be a non-zero uid")
        r.check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{where}: seccompProfile RuntimeDefault")
        r.check(pod.get("hostNetwork") is not True and pod.get("hostPID") is not True, f"{where}: no host namespaces")
        sa = pod.get("serviceAccountName")
        r.check(sa in service_accounts, f"{where}: ServiceAccount {sa!r} must exist")
        r.check(pod.get("automountServiceAccountToken") is False, f"{where}: automountServiceAccountToken must be false")
        for c in w.containers:
            cw = f"{where} container {c['name']}"
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                r.check(probe in c, f"{cw}: {probe} missing")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    r.check(what in (res.get(part) or {}), f"{cw}: resources.{part}.{what} missing")
            if "requests" in res and "limits" in res:
                for what in ("cpu", "memory"):
                    if what in res["requests"] and what in res["limits"]:
                        r.check(quantity(res["requests"][what]) <= quantity(res["limits"][what]),
                                f"{cw}: {what} request above its limit")
            sc = c.get("securityContext") or {}
            r.check(sc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation must be false")
            r.check(sc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem must be true")
            r.check(sc.get("privileged") is not True, f"{cw}: must not be privileged")
            r.check(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{cw}: runAsNonRoot must be true")
            r.check(sc.get("runAsUser", psc.get("runAsUser")) not in (0, None), f"{cw}: must not run as uid 0")
            r.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{cw}: capabilities.drop must include ALL")
            r.check(not (sc.get("capabilities") or {}).get("add"), f"{cw}: adds capabilities")
            image = c.get("image", "")
            tag_ok = "@sha256:" in image or (":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"))
            r.check(tag_ok, f"{cw}: image {image!r} needs an explicit tag other than latest (or a digest)")

        if w.kind != "Deployment" or w.name not in svc:
            continue
        # The services' own rules.
        c = w.containers[0]
        env = env_of(c)
        listen = literal(env, f"FABRIKAM_{w.name.upper()}_LISTEN") or ""
        port = w.port("http")
        r.check(port is not None, f"{where}: needs a container port named http")
        r.check(listen == f"0.0.0.0:{port}", f"{where}: FABRIKAM_{w.name.upper()}_LISTEN={listen!r} must be 0.0.0.0:{port}")
        for probe, path in (("livenessProbe", "/healthz/live"), ("readinessProbe", "/healthz/ready"),
                            ("startupProbe", "/healthz/startup")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            r.check(get.get("path") == path, f"{where}: {probe} must GET {path}, has {get.get('path')!r}")
            r.check(get.get("path") in health_routes, f"{where}: {probe} path {get.get('path')!r} is not a route of the platform's server")
            r.check(w.port(get.get("port")) == port, f"{where}: {probe} must probe the service port {port}")
        r.check("replicas" not in w.obj["spec"], f"{where}: sets replicas although its HorizontalPodAutoscaler owns them")
        # Shutdown: preStop sleep + the service's own grace must fit the termination grace period.
        grace_env = literal(env, "FABRIKAM_SHUTDOWN_GRACE")
        grace = int(grace_env) if grace_env else int(options[w.name]["shutdown-grace-secs"].default or 0)
        sleep = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        r.check(sleep + grace < tgps, f"{where}: preStop {sleep}s + shutdown grace {grace}s must be under terminationGracePeriodSeconds {tgps}s")
        r.check(c["image"].rsplit(":", 1)[0].endswith(f"/{svc[w.name]}"),
                f"{where}: image {c['image']!r} must be REGISTRY/{svc[w.name]}:TAG")


def check_service_objects(r: Report, k: Rendered, svc: dict[str, str]) -> None:
    r.section(f"{k.name}: per-service objects")
    for name in svc:
        w = k.workload(name)
        if not r.check(w is not None and w.kind == "Deployment", f"service {name}: no Deployment"):
            continue
        service = k.get("Service", name)
        if r.check(service is not None, f"service {name}: no Service"):
            r.check(matches({"matchLabels": service["spec"].get("selector")}, w.labels), f"Service {name}: selector does not select its pods")
            for p in service["spec"]["ports"]:
                r.check(w.port(p.get("targetPort", p["port"])) is not None, f"Service {name}: targetPort {p.get('targetPort')} is no container port")
                r.check(p["port"] == w.port("http"), f"Service {name}: port {p['port']} differs from the container's {w.port('http')}")
        pdb = k.get("PodDisruptionBudget", name)
        hpa = k.get("HorizontalPodAutoscaler", name)
        scaled = k.get("ScaledObject", name)
        if r.check(pdb is not None, f"service {name}: no PodDisruptionBudget"):
            r.check(matches(pdb["spec"].get("selector"), w.labels), f"PodDisruptionBudget {name}: selector does not select its pods")
            r.check("maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"], f"PodDisruptionBudget {name}: sets no budget")
            if "minAvailable" in pdb["spec"] and hpa:
                r.check(pdb["spec"]["minAvailable"] < hpa["spec"].get("minReplicas", 1),
                        f"PodDisruptionBudget {name}: minAvailable would block every node drain")
        if r.check(hpa is not None or scaled is not None, f"service {name}: no HorizontalPodAutoscaler (or KEDA ScaledObject)"):
            if hpa:
                ref = hpa["spec"]["scaleTargetRef"]
                r.check(ref["kind"] == "Deployment" and ref["name"] == name, f"HorizontalPodAutoscaler {name}: scales {ref}")
                r.check(hpa["spec"].get("minReplicas", 1) <= hpa["spec"]["maxReplicas"], f"HorizontalPodAutoscaler {name}: min above max")
                cpu = [m for m in hpa["spec"].get("metrics") or [] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
                r.check(bool(cpu), f"HorizontalPodAutoscaler {name}: no CPU metric")
        sa = k.get("ServiceAccount", name)
        r.check(sa is not None and sa.get("automountServiceAccountToken") is False, f"service {name}: needs ServiceAccount {name} without a mounted token")
        own = k.get("NetworkPolicy", name)
        r.check(own is not None and bool(own["spec"].get("podSelector")) and matches(own["spec"]["podSelector"], w.labels)
                and (own["spec"].get("ingress") or own["spec"].get("egress")),
                f"service {name}: no NetworkPolicy of its own (named {name}, selecting its pods, with rules)")


def check_network(r: Report, k: Rendered, svc: dict[str, str], in_cluster_backends: bool) -> None:
    r.section(f"{k.name}: network policies")
    deny = [p for p in k.of_kind("NetworkPolicy")
            if p["spec"].get("podSelector") in ({}, None) and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    r.check(bool(deny), "no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")
    for p in k.of_kind("NetworkPolicy"):
        for rule in p["spec"].get("egress") or []:
            for peer in rule.get("to") or []:
                cidr = (peer.get("ipBlock") or {}).get("cidr", "")
                r.check(cidr not in ("0.0.0.0/0", "::/0"), f"NetworkPolicy {p['metadata']['name']}: egress to the whole internet")

    # Service-to-service: what the URLs configure, what the policies allow, what the architecture says.
    configured: set[tuple[str, str]] = set()
    for name in svc:
        w = k.workload(name)
        if not w:
            continue
        for var, e in env_of(w.containers[0]).items():
            m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)/?", e.get("value") or "")
            if var.endswith("_URL") and m:
                target, port = m.group(1), int(m.group(2))
                configured.add((name, target))
                t = k.workload(target)
                service = k.get("Service", target)
                r.check(t is not None and service is not None and any(p["port"] == port for p in service["spec"]["ports"]),
                        f"{name}: {var}={e['value']} names no Service port")
    expected = {(a, b) for a, bs in CALLS.items() for b in bs}
    r.check(configured == expected, f"configured calls {sorted(configured)} differ from the architecture's {sorted(expected)}")

    allowed: set[tuple[str, str]] = set()
    pods = [w for w in k.workloads]
    for src in pods:
        for dst in pods:
            if src is dst:
                continue
            for port in dst.ports():
                out = k.allowed("egress", src, dst, dst, port)
                into = k.allowed("ingress", dst, src, dst, port)
                if out and into:
                    allowed.add((src.name, dst.name))
                r.check(out == into, f"{src.name} -> {dst.name}:{port} is one-sided: "
                        f"{'egress' if out else 'ingress'} allowed, {'ingress' if out else 'egress'} denied")
    owners: dict[str, set[str]] = {}
    for name in svc:
        w = k.workload(name)
        for e in env_of(w.containers[0]).values() if w else []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref["key"] in BACKEND_OF_SECRET_KEY:
                owners.setdefault(BACKEND_OF_SECRET_KEY[ref["key"]], set()).add(name)
    for backend, architecture_owners in BACKEND_OWNERS.items():
        r.check(owners.get(backend, set()) == architecture_owners,
                f"the services configured for {backend} (by their Secret URLs) are {sorted(owners.get(backend, set()))}, "
                f"the architecture's owners {sorted(architecture_owners)}")
    expected_allowed = set(expected)
    if in_cluster_backends:
        expected_allowed |= {(o, b) for b, os_ in owners.items() for o in os_}
    r.check(allowed == expected_allowed,
            f"allowed in-namespace connections differ from the expected ones: extra {sorted(allowed - expected_allowed)}, "
            f"missing {sorted(expected_allowed - allowed)}")

    # Leaving the namespace: DNS for all; the backends' owners to their servers (when managed).
    for w in pods:
        external = k.external_egress(w)
        for peer, ports in external:
            r.check(peer != "anywhere", f"{w.name}: egress rule without destination")
            if peer == "namespace kube-system":
                r.check(ports == [53, 53], f"{w.name}: egress to kube-system beyond DNS: {ports}")
                continue
            backend = next((b for b, port in BACKEND_PORT.items() if ports == [port]), None)
            r.check(not in_cluster_backends and backend is not None and w.name in owners.get(backend, set()),
                    f"{w.name}: egress to {peer} on {ports} is not to a server it owns data on")
        if w.name in svc and not in_cluster_backends:
            for backend, os_ in owners.items():
                if w.name in os_:
                    r.check(any(ports == [BACKEND_PORT[backend]] for _, ports in external),
                            f"{w.name}: no egress to its {backend} server (port {BACKEND_PORT[backend]})")
    # Entering from other namespaces: the ingress controller to the gateway, Prometheus to /metrics.
    for p in k.of_kind("NetworkPolicy"):
        for rule in p["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                if "namespaceSelector" in peer and not matches(peer["namespaceSelector"], k.namespace_labels):
                    selected = [w.name for w in pods if matches(p["spec"].get("podSelector"), w.labels)]
                    r.check(not selected or p["metadata"]["name"] in ("gateway", "allow-metrics-scrape"),
                            f"NetworkPolicy {p['metadata']['name']}: lets another namespace reach {selected}")


def check_config(r: Report, k: Rendered, readme: str) -> None:
    r.section(f"{k.name}: config and secrets")
    r.check(not k.of_kind("Secret"), "a Secret is rendered: secret values must not be committed")
    configmaps = {d["metadata"]["name"]: d for d in k.of_kind("ConfigMap")}
    for w in k.workloads:
        volumes = {v["name"]: v for v in w.pod.get("volumes") or []}
        for v in volumes.values():
            if "configMap" in v:
                r.check(v["configMap"]["name"] in configmaps, f"{w.name}: volume {v['name']} names missing ConfigMap {v['configMap']['name']}")
        for c in w.containers:
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    cm = configmaps.get(ref["name"])
                    r.check(cm is not None and ref["key"] in (cm.get("data") or {}),
                            f"{w.name}: {e['name']} reads missing ConfigMap key {ref['name']}/{ref['key']}")
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    r.check(ref["name"] == "fabrikam-backends", f"{w.name}: {e['name']} reads Secret {ref['name']} (only fabrikam-backends is documented)")
                    r.check(f"`{ref['key']}`" in readme, f"{w.name}: Secret key {ref['key']!r} is not documented in deploy/README.md")
                if "value" in e:
                    r.check(not re.search(r"://[^/@\s]*:[^/@\s]+@", e["value"]), f"{w.name}: {e['name']} carries a password in a plain value")

    ns = k.of_kind("Namespace")
    if r.check(len(ns) == 1, "exactly one Namespace"):
        labels = ns[0]["metadata"].get("labels") or {}
        r.check(labels.get("pod-security.kubernetes.io/enforce") == "restricted", "Namespace must enforce the restricted Pod Security Standard")
    r.check(len(k.of_kind("LimitRange")) == 1, "a LimitRange")
    quotas = k.of_kind("ResourceQuota")
    if not r.check(len(quotas) == 1, "a ResourceQuota"):
        return
    hard = quotas[0]["spec"]["hard"]
    need = {"requests.cpu": 0.0, "requests.memory": 0.0, "limits.cpu": 0.0, "limits.memory": 0.0, "pods": 0.0,
            "persistentvolumeclaims": 0.0}
    for w in k.workloads:
        spec = w.obj["spec"]
        if w.kind == "Deployment":
            hpa = k.get("HorizontalPodAutoscaler", w.name)
            scaled = k.get("ScaledObject", w.name)
            count = hpa["spec"]["maxReplicas"] if hpa else scaled["spec"]["maxReplicaCount"] if scaled else spec.get("replicas", 1)
            strategy = spec.get("strategy") or {}
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                count += int((strategy.get("rollingUpdate") or {}).get("maxSurge", 1))
        else:
            count = spec.get("replicas", 1)
            need["persistentvolumeclaims"] += count * len(spec.get("volumeClaimTemplates") or [])
        need["pods"] += count
        for c in w.containers:
            for part in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    need[f"{part}.{what}"] += count * quantity((c.get("resources") or {}).get(part, {}).get(what, 0))
    for key, value in need.items():
        r.check(key in hard and value <= quantity(hard[key]),
                f"ResourceQuota {key}={hard.get(key)} is below the {value:g} that every workload at its maximum (plus surge) needs")

    for ing in k.of_kind("Ingress"):
        name = ing["metadata"]["name"]
        tls = ing["spec"].get("tls") or []
        r.check(bool(tls) and all(t.get("secretName") for t in tls), f"Ingress {name}: TLS with a certificate Secret is required")
        tls_hosts = {h for t in tls for h in t.get("hosts") or []}
        for rule in ing["spec"].get("rules") or []:
            r.check(rule.get("host") in tls_hosts, f"Ingress {name}: host {rule.get('host')} is not covered by TLS")
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                r.check(backend["name"] == "gateway", f"Ingress {name}: only the gateway is public, not {backend['name']}")
                service = k.get("Service", backend["name"])
                port = backend["port"]
                r.check(service is not None and any(port.get("name") == p.get("name") or port.get("number") == p["port"]
                                                    for p in service["spec"]["ports"]),
                        f"Ingress {name}: backend {backend} is not a Service port")
    r.check(len(k.of_kind("Ingress")) == 1, "exactly one Ingress (the gateway's)")


def check_keda(r: Report, k: Rendered) -> None:
    r.section(f"{k.name}: KEDA component")
    scaled = k.of_kind("ScaledObject")
    if not r.check(len(scaled) == 1, "one ScaledObject"):
        return
    so = scaled[0]
    target = so["spec"]["scaleTargetRef"]["name"]
    r.check(k.workload(target) is not None, f"ScaledObject scales missing Deployment {target}")
    r.check(k.get("HorizontalPodAutoscaler", target) is None, f"HorizontalPodAutoscaler {target} must be removed: KEDA makes its own")
    triggers = {t["type"]: t for t in so["spec"]["triggers"]}
    js = triggers.get("nats-jetstream")
    if r.check(js is not None, "a nats-jetstream trigger"):
        meta = js["metadata"]
        for key in ("natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"):
            r.check(key in meta, f"nats-jetstream trigger needs {key}")
        r.check(meta.get("stream") == "fabrikam-delivery-requests" and meta.get("consumer") == "delivery-requests-workers",
                "the trigger must watch stream fabrikam-delivery-requests, consumer delivery-requests-workers (crates/platform/src/bus/nats.rs)")
    nats_rs = (ROOT / "crates/platform/src/bus/nats.rs").read_text()
    r.check('format!("{name}-workers")' in nats_rs, "the NATS backend no longer names its consumer NAME-workers: update the ScaledObject")


def distributed_script_settings() -> dict[str, tuple[int, list[str]]]:
    """service -> (port, flags) from the start lines of scripts/run-distributed.sh."""
    out = {}
    for line in (ROOT / "scripts/run-distributed.sh").read_text().splitlines():
        m = re.match(r"^start (\w+) (\d+)(.*)$", line.strip())
        if m:
            out[m.group(1)] = (int(m.group(2)), re.findall(r"--([a-z0-9-]+)", m.group(3)))
    return out


def service_ports(svc: dict[str, str], options: dict[str, dict[str, Option]]) -> dict[str, int]:
    """Each service's standard port: the distributed script's, else its binary's default."""
    script = distributed_script_settings()
    return {name: script[name][0] if name in script else int((options[name]["listen"].default or ":0").rsplit(":", 1)[1])
            for name in svc}


def required_env(options: dict[str, Option], flags_from_script: list[str]) -> set[str]:
    """Settings a container must set: its listen address, every setting that defaults to an
    embedded SQLite file (a store or bus URL), and every flag the distributed script passes."""
    need = set()
    for o in options.values():
        if o.env and (o.flag == "listen" or (o.default or "").startswith("sqlite://") or o.flag in flags_from_script):
            need.add(o.env)
    return need


def check_env(r: Report, rendered: list[Rendered], svc: dict[str, str], options: dict[str, dict[str, Option]],
              options_allinone: dict[str, dict[str, Option]], compose: dict, dockerfile_env: dict[str, dict[str, str]]) -> None:
    r.section("env drift")
    script = distributed_script_settings()
    for name in svc:
        accepted = {o.env for o in options[name].values() if o.env}
        r.check(accepted == {o.env for o in options_allinone[name].values() if o.env},
                f"{name}: `fabrikam {name}` and `{svc[name]}` accept different variables")
        for flag in script.get(name, (0, []))[1]:
            r.check(flag in options[name], f"{name}: scripts/run-distributed.sh passes --{flag}, which {svc[name]} does not take")
        need = required_env(options[name], script.get(name, (0, []))[1])
        listen_env = options[name]["listen"].env if "listen" in options[name] else None
        # The standard port: the distributed script's, else (a binary it does not start, the
        # supervisor) the binary's default listen address.
        primary = crate_of(name) == name
        default_port = int((options[name]["listen"].default or ":0").rsplit(":", 1)[1]) if listen_env else None
        script_port = script[name][0] if name in script else default_port
        r.check(name in script or not primary, f"{name}: scripts/run-distributed.sh does not start it")
        for k in rendered:
            w = k.workload(name)
            if not w:
                continue
            names = set(env_of(w.containers[0]))
            r.check(names <= accepted | EXTRA_ENV, f"{k.name}: Deployment {name} sets {sorted(names - accepted - EXTRA_ENV)}, which {svc[name]} does not accept")
            r.check(need <= names, f"{k.name}: Deployment {name} does not set {sorted(need - names)} (needed in distributed mode)")
            r.check(w.port("http") == script_port, f"{k.name}: Deployment {name} listens on {w.port('http')}, the distributed script on {script_port}")
        service = (compose.get("services") or {}).get(name)
        if r.check(service is not None or not primary, f"compose.yaml: no service {name}") and service:
            env = compose_env(service)
            r.check(set(env) <= accepted | EXTRA_ENV, f"compose.yaml: {name} sets {sorted(set(env) - accepted - EXTRA_ENV)}, which {svc[name]} does not accept")
            r.check(need <= set(env), f"compose.yaml: {name} does not set {sorted(need - set(env))} (needed in distributed mode)")
            if listen_env in env:
                r.check(str(env[listen_env]).endswith(f":{script_port}"), f"compose.yaml: {name} listens on {env[listen_env]}, the distributed script on {script_port}")
            for var, value in env.items():
                for backend, scheme in BACKEND_SCHEME.items():
                    if str(value).startswith(scheme):
                        r.check(backend in compose["services"], f"compose.yaml: {name}.{var} points at {backend}, which compose does not run")
        stage = dockerfile_env.get(name)
        if r.check(stage is not None, f"Dockerfile: no stage {name}"):
            r.check(set(stage) <= accepted, f"Dockerfile: stage {name} sets {sorted(set(stage) - accepted)}, which {svc[name]} does not accept")
            r.check(stage.get(listen_env, "").endswith(f":{script_port}") and stage.get(listen_env, "").startswith("0.0.0.0:"),
                    f"Dockerfile: stage {name} must set {listen_env}=0.0.0.0:{script_port}")


def parse_dockerfile(text: str) -> list[dict]:
    """Stages: name, base, instructions [(keyword, args)]."""
    text = re.sub(r"\\\n", " ", text)
    stages: list[dict] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            stages.append({"name": m.group(2), "base": m.group(1), "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((keyword, args.strip()))
        else:
            stages.append({"name": None, "base": None, "instructions": [(keyword, args.strip())], "preamble": True})
    return stages


def dockerfile_stage_env(stages: list[dict]) -> dict[str, dict[str, str]]:
    out = {}
    for s in stages:
        if s["name"]:
            env = {}
            for kw, args in s["instructions"]:
                if kw == "ENV":
                    for m in re.finditer(r"([A-Z0-9_]+)=(\S+)", args):
                        env[m.group(1)] = m.group(2)
            out[s["name"]] = env
    return out


def check_dockerfile(r: Report, stages: list[dict], svc: dict[str, str]) -> None:
    r.section("Dockerfile")
    by_name = {s["name"]: s for s in stages if s["name"]}
    preamble_args = {}
    for s in stages:
        for kw, args in s["instructions"]:
            r.check(kw != "HEALTHCHECK", f"stage {s['name']}: HEALTHCHECK (Kubernetes probes do it)")
            if kw == "ARG" and s.get("preamble"):
                key, _, value = args.partition("=")
                preamble_args[key] = value
    for arg in ("RUST_IMAGE", "RUNTIME_IMAGE"):
        image = preamble_args.get(arg, "")
        r.check(":" in image and not image.endswith(":latest"), f"ARG {arg}={image!r} must name a pinned tag")
    runtime = by_name.get("runtime")
    if r.check(runtime is not None, "a stage named runtime"):
        users = [a for kw, a in runtime["instructions"] if kw == "USER"]
        r.check(bool(users) and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]) is not None, "runtime: USER must be a numeric non-root uid")
        labels = " ".join(a for kw, a in runtime["instructions"] if kw == "LABEL")
        for key in ("version", "revision", "source", "created", "licenses"):
            r.check(f"org.opencontainers.image.{key}=" in labels, f"runtime: OCI label org.opencontainers.image.{key} missing")
    for name, binary in svc.items():
        crate = crate_of(name)
        build = by_name.get(f"build-{crate}")
        if r.check(build is not None, f"no stage build-{crate}"):
            runs = " ".join(a for kw, a in build["instructions"] if kw == "RUN")
            r.check(f"scripts/build-service.sh {crate} /out" in runs, f"build-{crate}: must run scripts/build-service.sh {crate} /out (the CI build step)")
            r.check("--mount=type=cache" in runs, f"build-{crate}: no dependency cache mount")
        stage = by_name.get(name)
        if not r.check(stage is not None, f"no stage {name}"):
            continue
        r.check(stage["base"] == "runtime", f"stage {name}: must build FROM runtime")
        ins = stage["instructions"]
        r.check(any(kw == "COPY" and f"--from=build-{crate}" in a and f"/out/{binary}" in a for kw, a in ins), f"stage {name}: must COPY /out/{binary} from build-{crate}")
        r.check(any(kw == "ENTRYPOINT" and a == f'["/usr/local/bin/{binary}"]' for kw, a in ins), f"stage {name}: ENTRYPOINT must be [\"/usr/local/bin/{binary}\"]")
        r.check(any(kw == "LABEL" and f'org.opencontainers.image.title="{binary}"' in a for kw, a in ins), f"stage {name}: OCI title label")
        r.check(not any(kw == "USER" for kw, a in ins), f"stage {name}: must keep the runtime stage's USER")
    out = subprocess.run([str(ROOT / "scripts/build-service.sh"), "--dry-run", "delivery"], capture_output=True, text=True)
    r.check(out.stdout.strip() == "cargo build --release --locked -p delivery",
            f"scripts/build-service.sh must run `cargo build --release --locked -p SERVICE`, runs {out.stdout.strip()!r}")


def compose_env(service: dict | None) -> dict[str, str]:
    env = (service or {}).get("environment") or {}
    if isinstance(env, list):
        env = dict(x.split("=", 1) for x in env)
    return {k: str(v) for k, v in env.items()}


def check_compose(r: Report, compose: dict, svc: dict[str, str]) -> None:
    r.section("compose.yaml")
    services_ = compose.get("services") or {}
    for name in ("nats", "postgres", "redis"):
        if r.check(name in services_, f"no {name} service"):
            image = services_[name].get("image", "")
            r.check(":" in image and not image.endswith(":latest"), f"{name}: image {image!r} needs a pinned tag")
    r.check("-js" in (services_.get("nats", {}).get("command") or []), "nats: JetStream (-js) must be on")
    for name in svc:
        s = services_.get(name)
        if not s:
            continue
        build = s.get("build") or {}
        r.check(build.get("target") == name and build.get("context") == ".", f"{name}: must build ./Dockerfile --target {name}")
        r.check(not str(s.get("image", "")).endswith(":latest"), f"{name}: image tag latest")
        r.check(s.get("read_only") is True, f"{name}: read_only must be true")
        r.check(str(s.get("user", "0")).split(":")[0] not in ("0", "root"), f"{name}: must run as a non-root user")
        r.check("ALL" in (s.get("cap_drop") or []), f"{name}: cap_drop must include ALL")
        r.check(any("no-new-privileges" in x for x in s.get("security_opt") or []), f"{name}: no-new-privileges")
        r.check("healthcheck" not in s, f"{name}: the images have no shell or curl for a healthcheck")
        r.check(bool(s.get("ports")) == (name == "gateway"), f"{name}: only the gateway may publish ports")
    gateway_ports = services_.get("gateway", {}).get("ports") or []
    r.check(any(str(p).endswith(":8080") for p in gateway_ports), "gateway: must publish 8080")
    # The calls compose configures are the architecture's (for the services it runs: the workflow
    # supervises itself there), each to the port its target listens on.
    configured = set()
    for name in svc:
        for var, value in compose_env(services_.get(name)).items():
            m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)/?", value)
            if var.endswith("_URL") and m:
                target, port = m.group(1), m.group(2)
                configured.add((name, target))
                listen = compose_env(services_.get(target)).get(f"FABRIKAM_{target.upper()}_LISTEN", "")
                r.check(listen.endswith(f":{port}"), f"{name}: {var}={value}, but {target} listens on {listen or 'nothing'}")
    expected = {(a, b) for a, bs in CALLS.items() if a in services_ for b in bs}
    r.check(configured == expected, f"configured calls {sorted(configured)} differ from the architecture's {sorted(expected)}")


def check_workflows(r: Report) -> None:
    r.section("workflows")
    files = sorted((ROOT / ".github/workflows").glob("*.yml"))
    r.check(len(files) >= 2, "expected the ci and release workflows")
    all_text = ""
    for f in files:
        doc = yaml.safe_load(f.read_text())
        all_text += f.read_text()
        triggers = doc.get(True, doc.get("on"))  # YAML 1.1 reads `on` as true
        r.check(triggers is not None, f"{f.name}: no triggers")
        for job_name, job in (doc.get("jobs") or {}).items():
            where = f"{f.name} job {job_name}"
            r.check("timeout-minutes" in job, f"{where}: no timeout-minutes")
            for step in job.get("steps") or []:
                if "uses" in step:
                    r.check(re.search(r"@(v\d+(\.\d+)*|[0-9a-f]{40})$", step["uses"]) is not None, f"{where}: action {step['uses']} must be pinned to a version")
                if "run" in step:
                    for line in str(step["run"]).splitlines():
                        line = line.strip()
                        if not line or line.startswith("#"):
                            continue
                        m = re.match(r"^(?:bash |sudo -E )?(scripts/[\w.-]+|\.ci/run)\b", line)
                        if r.check(m is not None, f"{where}: step {step.get('name')!r} runs {line!r}, not a script of this repository"):
                            path = ROOT / m.group(1)
                            r.check(path.is_file() and os.access(path, os.X_OK), f"{where}: {m.group(1)} is missing or not executable")
    release = ROOT / ".github/workflows/release.yml"
    if r.check(release.is_file(), "release.yml missing"):
        doc = yaml.safe_load(release.read_text())
        triggers = doc.get(True, doc.get("on"))
        r.check("release/*/*" in ((triggers or {}).get("push") or {}).get("tags", []), "release.yml: must run on tags release/<service>/<semver>")
        deploys = [j for j in doc["jobs"].values() if "deploy.sh" in str(j.get("steps"))]
        r.check(bool(deploys), "release.yml: no deploy job")
        r.check(any((j.get("environment") or {}) and "prod" in str(j.get("environment")) for j in deploys),
                "release.yml: the production deploy must wait on an environment (its approval rule)")
    ci = ROOT / ".github/workflows/ci.yml"
    if r.check(ci.is_file(), "ci.yml missing"):
        doc = yaml.safe_load(ci.read_text())
        services_ = [set((j.get("services") or {}).keys()) for j in doc["jobs"].values()]
        r.check(any({"postgres", "redis"} <= s for s in services_), "ci.yml: a job with PostgreSQL and Redis service containers")
        r.check("ci-nats.sh" in ci.read_text(), "ci.yml: NATS (with JetStream) must be started for the real-backend job")
        r.check("check-deploy.sh" in all_text, "a workflow must run scripts/check-deploy.sh")


def check_docs(r: Report, readme: str, ports: dict[str, int]) -> None:
    r.section("deploy/README.md")
    for name, port in ports.items():
        r.check(f"{name} {port}" in readme, f"does not list the service {name} with its port ({name} {port!r})")
    for needle in ("overlays/dev", "overlays/prod", "scripts/deploy.sh", "scripts/build-images.sh", "scripts/check-deploy.sh",
                   "compose", "What is not verified", "keda-workflow", "az aks"):
        r.check(needle in readme, f"does not mention {needle!r}")
    for script in re.findall(r"scripts/[\w.-]+\.(?:sh|py)", readme):
        r.check((ROOT / script).is_file(), f"mentions {script}, which does not exist")


def run_checks(rendered: list[Rendered], bin_dir: Path) -> Report:
    r = Report()
    svc = services()
    if bin_dir not in _OPTIONS_CACHE:
        _OPTIONS_CACHE[bin_dir] = (
            {name: binary_options(bin_dir, [binary]) for name, binary in svc.items()},
            {name: binary_options(bin_dir, ["fabrikam", name]) for name in svc},
        )
    options, options_allinone = _OPTIONS_CACHE[bin_dir]
    server_rs = (ROOT / "crates/platform/src/http/server.rs").read_text()
    health_routes = set(re.findall(r'\.route\(\s*"(/healthz[^"]*)"', server_rs))
    readme = (ROOT / "deploy/README.md").read_text()
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    stages = parse_dockerfile((ROOT / "Dockerfile").read_text())

    r.section("inputs")
    r.check({"/healthz/live", "/healthz/ready", "/healthz/startup"} <= health_routes, f"the platform's health routes are {sorted(health_routes)}")
    r.check({"dev", "prod"} <= {k.name for k in rendered}, "both overlays, dev and prod, must be given")
    for k in rendered:
        in_cluster = k.workload("postgres") is not None
        check_workloads(r, k, health_routes, svc, options)
        check_service_objects(r, k, svc)
        check_network(r, k, svc, in_cluster)
        check_config(r, k, readme)
        if k.name == "keda":
            check_keda(r, k)
    r.section("overlays")
    by_name = {k.name: k for k in rendered}
    if "dev" in by_name and "prod" in by_name:
        r.check(by_name["dev"].workload("postgres") is not None, "dev must run PostgreSQL, NATS and Redis in the cluster")
        r.check(by_name["prod"].workload("postgres") is None, "prod must point at managed servers, not in-cluster ones")
        r.check(by_name["dev"].namespace != by_name["prod"].namespace, "dev and prod share a namespace")
    check_env(r, [k for k in rendered if k.name in ("dev", "prod")], svc, options, options_allinone, compose,
              dockerfile_stage_env(stages))
    check_dockerfile(r, stages, svc)
    check_compose(r, compose, svc)
    check_workflows(r)
    check_docs(r, readme, service_ports(svc, options))
    return r


_OPTIONS_CACHE: dict = {}


def _find(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _container(docs: list[dict], name: str) -> dict:
    return _find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def _cut_off_from_nats(docs: list[dict], name: str) -> None:
    """Both sides agree: name no longer reaches NATS (although it still reads the bus URL)."""
    clients = _find(docs, "NetworkPolicy", "nats-clients")["spec"]["podSelector"]["matchExpressions"][0]
    clients["values"].remove(name)
    server = _find(docs, "NetworkPolicy", "nats")["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]
    server["values"].remove(name)


def _let_gateway_reach_postgres(docs: list[dict]) -> None:
    clients = _find(docs, "NetworkPolicy", "postgres-clients")["spec"]["podSelector"]["matchExpressions"][0]
    clients["values"].append("gateway")
    server = _find(docs, "NetworkPolicy", "postgres")["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]
    server["values"].append("gateway")


# Broken manifests the checks must catch: (what is broken, how, a fragment of the expected failure).
MUTATIONS = [
    ("delivery loses its readiness probe",
     lambda d: _container(d, "delivery").pop("readinessProbe"), "readinessProbe missing"),
    ("package loses its CPU limit",
     lambda d: _container(d, "package")["resources"]["limits"].pop("cpu"), "resources.limits.cpu missing"),
    ("ingestion may run as root",
     lambda d: _find(d, "Deployment", "ingestion")["spec"]["template"]["spec"]["securityContext"].update(runAsNonRoot=False),
     "runAsNonRoot must be true"),
    ("gateway gets a writable root filesystem",
     lambda d: _container(d, "gateway")["securityContext"].update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
    ("dronescheduler runs the latest image",
     lambda d: _container(d, "dronescheduler").update(image="registry.example/fabrikam-dronescheduler:latest"),
     "explicit tag other than latest"),
    ("delivery's NetworkPolicy is gone",
     lambda d: d.remove(_find(d, "NetworkPolicy", "delivery")), "no NetworkPolicy of its own"),
    ("gateway may send anywhere",
     lambda d: _find(d, "NetworkPolicy", "gateway")["spec"]["egress"].append({}), "egress rule without destination"),
    ("gateway may reach PostgreSQL (both policies agree)", lambda d: _let_gateway_reach_postgres(d),
     "allowed in-namespace connections differ"),
    ("a client of Redis that Redis refuses",
     lambda d: _find(d, "NetworkPolicy", "redis-clients")["spec"]["podSelector"].update(
         matchExpressions=[{"key": "app.kubernetes.io/name", "operator": "In", "values": ["delivery", "package"]}], matchLabels={}),
     "is one-sided"),
    ("the default deny is gone",
     lambda d: d.remove(_find(d, "NetworkPolicy", "default-deny")), "no default-deny"),
    ("workflow gets a setting its binary does not know",
     lambda d: _container(d, "workflow")["env"].append({"name": "FABRIKAM_WORKFLOW_NO_SUCH_SETTING", "value": "1"}),
     "which fabrikam-workflow does not accept"),
    ("workflow forgets its bus URL",
     lambda d: _container(d, "workflow").update(env=[e for e in _container(d, "workflow")["env"] if e["name"] != "FABRIKAM_BUS_URL"]),
     "does not set ['FABRIKAM_BUS_URL']"),
    ("package reads an undocumented Secret key",
     lambda d: next(e for e in _container(d, "package")["env"] if e["name"] == "FABRIKAM_PACKAGE_DB")["valueFrom"]["secretKeyRef"]
     .update(key="no-such-key"), "not documented"),
    ("gateway may scale past the quota",
     lambda d: _find(d, "HorizontalPodAutoscaler", "gateway")["spec"].update(maxReplicas=100), "ResourceQuota"),
    ("the workflow calls the gateway",
     lambda d: _container(d, "workflow")["env"].append({"name": "FABRIKAM_PACKAGE_URL", "value": "http://gateway:8080"}),
     "configured calls"),
    ("delivery's PodDisruptionBudget is gone",
     lambda d: d.remove(_find(d, "PodDisruptionBudget", "delivery")), "no PodDisruptionBudget"),
    ("dronescheduler cannot reach NATS to publish drone-events (both policies agree)",
     lambda d: _cut_off_from_nats(d, "dronescheduler"), "allowed in-namespace connections differ"),
    ("delivery forgets its bus URL (drone-events in, delivery-events out)",
     lambda d: _container(d, "delivery").update(env=[e for e in _container(d, "delivery")["env"] if e["name"] != "FABRIKAM_BUS_URL"]),
     "the architecture's owners"),
    ("the gateway does not know where the delivery history is",
     lambda d: _container(d, "gateway").update(env=[e for e in _container(d, "gateway")["env"] if e["name"] != "FABRIKAM_DELIVERYHISTORY_URL"]),
     "configured calls"),
    ("deliveryhistory's ServiceAccount is gone",
     lambda d: d.remove(_find(d, "ServiceAccount", "deliveryhistory")), "ServiceAccount 'deliveryhistory' must exist"),
]


def mutation_test(rendered: list[Rendered], bin_dir: Path) -> int:
    """Breaks the dev overlay in each way of MUTATIONS and expects the checks to say so."""
    import copy

    dev = next(k for k in rendered if k.name == "dev")
    missed = 0
    for what, mutate, expected in MUTATIONS:
        docs = copy.deepcopy(dev.docs)
        mutate(docs)
        broken = [Rendered("dev", docs) if k.name == "dev" else k for k in rendered]
        r = run_checks(broken, bin_dir)
        caught = any(expected in e for e in r.errors)
        print(f"{'caught' if caught else 'MISSED'}: {what}" + ("" if caught else f" (expected a failure with {expected!r}; got {r.errors})"))
        missed += not caught
    print(f"mutation test: {len(MUTATIONS) - missed} of {len(MUTATIONS)} broken manifests caught")
    return 1 if missed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rendered", action="append", default=[], metavar="NAME=FILE",
                        help="a rendered overlay (dev and prod; keda for prod plus the KEDA component)")
    parser.add_argument("--bin-dir", default=str(ROOT / "target/debug"), help="where fabrikam and fabrikam-SERVICE are")
    parser.add_argument("--mutation-test", action="store_true",
                        help="break the dev overlay in known ways and fail unless every break is caught")
    args = parser.parse_args()

    rendered = []
    for item in args.rendered:
        name, _, path = item.partition("=")
        rendered.append(Rendered(name, load_docs(Path(path))))
    bin_dir = Path(args.bin_dir)
    if args.mutation_test:
        return mutation_test(rendered, bin_dir)
    r = run_checks(rendered, bin_dir)
    for e in r.errors:
        print(f"FAIL {e}")
    print(f"deploy_checks: {r.checks - len(r.errors)} of {r.checks} checks hold"
          f" ({len(services())} services, overlays {', '.join(k.name for k in rendered)})")
    return 1 if r.errors else 0


if __name__ == "__main__":
    sys.exit(main())
