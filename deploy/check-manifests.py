#!/usr/bin/env python3
"""Structural checks of the Kubernetes manifests against deploy/Dockerfile and the gateway.json each one ships:
deploy/kubernetes/sidecar.yaml with deploy/gateway.container.json (one pod, SQLite), and deploy/kubernetes/fleet.yaml
with deploy/gateway.fleet.json (several replicas on one PostgreSQL database).

Without a cluster (or kubeconform), this asserts what matters for running Portcullis as a sidecar:
  - the manifest parses as YAML; the ConfigMap's gateway.json is valid JSON and equal to deploy/gateway.container.json;
  - the gateway container gets its configuration where the image's CMD (or the container's args) reads it, and every
    file the configuration names under a read-only mount is provided by that volume;
  - key_dir and the SQLite store are on a writable volume (emptyDir or PVC), not on the read-only root filesystem;
  - a postgres store: the URL and password come from the environment (password from a Secret), sslmode is
    verify-full with a mounted ca_file, the signing keys are sealed under a key-encryption key from a Secret, and
    there is more than one replica (else sidecar.yaml is the simpler choice);
  - every "${NAME}" in gateway.json is set by the container's env or the image's ENV; secret-looking ones come from a
    secretKeyRef to a Secret key defined in the manifest;
  - liveness GET /healthz and readiness GET /readyz point at the admin port (admin_listen), not the data port;
  - non-root (matching the Dockerfile's USER), readOnlyRootFilesystem, allowPrivilegeEscalation false, capabilities
    drop ALL, resource requests and limits, for every container;
  - terminationGracePeriodSeconds > limits.drain_seconds (+ a preStop sleep);
  - the Service exposes the data port only, never the admin port; a NetworkPolicy, if present, does not open it;
  - an admin listener off loopback (for the probes) does not open /introspect unauthenticated: no
    token_service.introspection_token (introspection off), or one taken from a "${NAME}" (a secret).
If the Python package kubernetes-validate is installed, each document is also validated against the Kubernetes
OpenAPI schema. Usage: deploy/check-manifests.py [manifest.yaml config.json]; without arguments both pairs are
checked. Exit 0 when every check passes, 1 otherwise.
"""

import json
import os
import posixpath
import re
import shlex
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
PAIRS = ([(sys.argv[1], sys.argv[2])] if len(sys.argv) > 2 else [
    (os.path.join(HERE, "kubernetes", "sidecar.yaml"), os.path.join(HERE, "gateway.container.json")),
    (os.path.join(HERE, "kubernetes", "fleet.yaml"), os.path.join(HERE, "gateway.fleet.json")),
])
DOCKERFILE = os.path.join(HERE, "Dockerfile")
SECRET_WORDS = re.compile(r"SECRET|PASSWORD|TOKEN|KEY|CREDENTIAL", re.I)

failures = []
passes = []


def check(condition, message):
    (passes if condition else failures).append(message)
    return condition


def runtime_stage(path):
    """Instructions (keyword, argument) of the Dockerfile's last stage, continuation lines joined."""
    instructions, current = [], ""
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if line.strip().startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            keyword, _, rest = current.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
        current = ""
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    return instructions[last_from:]


def dockerfile_facts(path):
    stage = runtime_stage(path)
    facts = {"env": {}, "cmd": [], "entrypoint": [], "user": None}
    for keyword, rest in stage:
        if keyword in ("CMD", "ENTRYPOINT"):
            facts[keyword.lower()] = json.loads(rest)
        elif keyword == "USER":
            facts["user"] = rest.split(":")[0]
        elif keyword == "ENV":
            for token in shlex.split(rest):
                name, _, value = token.partition("=")
                facts["env"][name] = value
    return facts


def config_path_from(args):
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return "gateway.json"


def env_references(value, found):
    if isinstance(value, str):
        found.update(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value))
    elif isinstance(value, list):
        for v in value:
            env_references(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            env_references(v, found)
    return found


def port_of(container, port):
    """A probe's or Service's port (number or name) as a container port number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def listen_port(address):
    return int(address.rsplit(":", 1)[1])


def main(MANIFEST, CONFIG):
    with open(MANIFEST, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    check(True, f"{os.path.relpath(MANIFEST)} parses as YAML ({len(docs)} documents)")
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    for kind in ("ConfigMap", "Secret", "Deployment", "Service"):
        check(kind in by_kind, f"has a {kind}")
    if failures:
        return

    try:
        import kubernetes_validate  # optional

        for d in docs:
            try:
                kubernetes_validate.validate(d, "1.30", strict=True)
                check(True, f"{d['kind']}/{d['metadata']['name']} validates against the Kubernetes 1.30 schema")
            except kubernetes_validate.ValidationError as e:
                check(False, f"{d['kind']}/{d['metadata']['name']}: schema: {e.message} at {list(e.path)}")
    except ImportError:
        print("note: kubernetes-validate is not installed; Kubernetes schema validation skipped")

    image = dockerfile_facts(DOCKERFILE)
    shipped = json.load(open(CONFIG, encoding="utf-8"))
    admin_port = listen_port(shipped["admin_listen"])
    data_port = listen_port(shipped["listen"])
    drain = shipped.get("limits", {}).get("drain_seconds", 10)
    check(admin_port != data_port, f"admin port {admin_port} differs from the data port {data_port}")
    # Probes need the admin listener on the pod's address; introspection must not ride along unauthenticated. The
    # gateway serves /introspect on a non-loopback admin listener only with token_service.introspection_token, which
    # must then be a secret from the environment, never a literal in a ConfigMap.
    admin_host = shipped["admin_listen"].rsplit(":", 1)[0].strip("[]")
    loopback_admin = admin_host in ("localhost", "::1") or admin_host.startswith("127.")
    introspection_token = shipped.get("token_service", {}).get("introspection_token")
    check(loopback_admin or introspection_token is None or re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", introspection_token),
          f"admin_listen {shipped['admin_listen']}: /introspect is "
          + ("served on loopback only" if loopback_admin else "off" if introspection_token is None
             else f"behind the bearer secret {introspection_token}"))

    deployment = by_kind["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    containers = pod["containers"]
    check(len(containers) == 2, "the pod has two containers (app and gateway)")
    gateway = next((c for c in containers if c["name"] == "portcullis"), None)
    if not check(gateway is not None, "a container named portcullis"):
        return
    apps = [c for c in containers if c is not gateway]

    # Configuration file: where the container's args (or the image's CMD) read it, from the ConfigMap.
    args = gateway.get("command", image["entrypoint"])[1:] + gateway.get("args", image["cmd"])
    config_file = config_path_from(args)
    check(posixpath.isabs(config_file), f"the gateway reads an absolute config path ({config_file})")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    configmaps = {c["metadata"]["name"]: c for c in by_kind["ConfigMap"]}
    secrets = {s["metadata"]["name"]: s for s in by_kind["Secret"]}

    def files_of(volume):
        """{relative path: (kind, object name, key)} that a configMap/secret/projected volume provides."""
        sources = []
        if "configMap" in volume:
            sources.append(("configMap", volume["configMap"]))
        if "secret" in volume:
            sources.append(("secret", dict(volume["secret"], name=volume["secret"].get("secretName"))))
        for s in volume.get("projected", {}).get("sources", []):
            for kind in ("configMap", "secret"):
                if kind in s:
                    sources.append((kind, s[kind]))
        files = {}
        for kind, src in sources:
            store = configmaps if kind == "configMap" else secrets
            obj = store.get(src.get("name"))
            keys = list((obj or {}).get("data", {}) or {}) + list((obj or {}).get("stringData", {}) or {})
            items = src.get("items") or [{"key": k, "path": k} for k in keys]
            for item in items:
                files[item["path"]] = (kind, src.get("name"), item["key"], item["key"] in keys)
        return files

    def provider(path):
        """(mount, volume) of the gateway container that holds `path` (longest mountPath wins)."""
        best = None
        for m in gateway.get("volumeMounts", []):
            mp = m["mountPath"].rstrip("/")
            if path == mp or path.startswith(mp + "/"):
                if best is None or len(mp) > len(best[0]["mountPath"].rstrip("/")):
                    best = (m, volumes.get(m["name"]))
        return best

    def provides_file(path, what):
        found = provider(path)
        if not check(found is not None and found[1] is not None, f"{what} {path} is on a mounted volume"):
            return None
        mount, volume = found
        relative = posixpath.relpath(path, mount["mountPath"]) if "subPath" not in mount else mount["subPath"]
        files = files_of(volume)
        entry = files.get(relative)
        check(entry is not None and entry[3],
              f"{what} {path} is provided by volume {mount['name']} ({entry[0]} {entry[1]} key {entry[2]})"
              if entry else f"{what} {path} is provided by volume {mount['name']}")
        return entry

    entry = provides_file(config_file, "the configuration")
    if entry and entry[0] == "configMap":
        text = configmaps[entry[1]]["data"][entry[2]]
        try:
            mounted = json.loads(text)
            check(mounted == shipped, f"the ConfigMap's gateway.json equals {os.path.relpath(CONFIG)}")
        except json.JSONDecodeError as e:
            check(False, f"the ConfigMap's gateway.json is valid JSON ({e})")
        check(any(m["mountPath"] == posixpath.dirname(config_file) and "subPath" not in m
                  for m in gateway.get("volumeMounts", [])),
              "the configuration folder is mounted whole (no subPath), so ConfigMap edits update the mounted files")
    else:
        check(False, "the configuration comes from a ConfigMap")
    config = shipped

    # Files named by the configuration: read-only ones provided, writable ones on a writable volume.
    service = config.get("token_service") or {}
    if service.get("users_file"):
        provides_file(service["users_file"], "token_service.users_file")
    store = config.get("store", {})
    signing = service.get("signing", {})
    writable = []
    if store.get("type", "sqlite") == "postgres":
        # Nothing of the gateway's lives in the pod: sessions, revocations, limits and the sealed signing keys are
        # in the database, so every replica is interchangeable.
        whole_env = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
        check(bool(whole_env.fullmatch(store.get("url", ""))) or "sslmode=verify-full" in store.get("url", ""),
              "store.url comes from the environment (or says sslmode=verify-full)")
        check(bool(whole_env.fullmatch(store.get("password", ""))) or "password_file" in store,
              "store.password comes from the environment (a Secret), never a literal")
        if store.get("ca_file"):
            provides_file(store["ca_file"], "store.ca_file")
        check(bool(whole_env.fullmatch(signing.get("key_encryption_key", ""))) or "key_encryption_key_file" in signing,
              "token_service.signing.key_encryption_key comes from the environment (a Secret)")
        check(deployment["spec"].get("replicas", 1) > 1, f"the fleet has several replicas ({deployment['spec'].get('replicas', 1)})")
    else:
        writable.append(("token_service.signing.key_dir", signing.get("key_dir")))
    if store.get("type", "sqlite") == "sqlite":
        writable.append(("store.path", posixpath.dirname(store.get("path", ""))))
    for what, path in writable:
        if not path:
            continue
        found = provider(path)
        ok = found is not None and found[1] is not None and not found[0].get("readOnly", False) and (
            "emptyDir" in found[1] or "persistentVolumeClaim" in found[1] or "ephemeral" in found[1])
        check(ok, f"{what} ({path}) is on a writable emptyDir/PVC volume"
                  + (f" ({found[0]['name']} at {found[0]['mountPath']})" if found else ""))

    # Environment: every ${NAME} is set; secret-looking names come from a Secret.
    env = {e["name"]: e for e in gateway.get("env", [])}
    for name in sorted(env_references(config, set())):
        if name in env:
            e = env[name]
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if SECRET_WORDS.search(name):
                ok = ref is not None and ref.get("key") in {
                    **(secrets.get(ref.get("name"), {}).get("data") or {}),
                    **(secrets.get(ref.get("name"), {}).get("stringData") or {})}
                check(ok, f"${{{name}}} comes from a key of a Secret in the manifest (secretKeyRef)")
            else:
                check("value" in e or "valueFrom" in e, f"${{{name}}} is set by the container's env")
        else:
            check(name in image["env"], f"${{{name}}} is set by the container's env or the image's ENV")

    # Probes on the admin port.
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = gateway.get(probe, {}).get("httpGet")
        check(get is not None and get.get("path") == path and port_of(gateway, get.get("port")) == admin_port,
              f"{probe} is GET {path} on the admin port {admin_port}")
    check(any(p["containerPort"] == data_port for p in gateway.get("ports", [])),
          f"the gateway container declares the data port {data_port}")

    # Security context and resources.
    pod_sc = pod.get("securityContext", {})
    for c in containers:
        sc = c.get("securityContext", {})
        name = c["name"]
        check(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{name}: runAsNonRoot")
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        check(uid is not None and uid != 0, f"{name}: runAsUser is a non-zero uid ({uid})")
        check(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem")
        check(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation false")
        check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{name}: capabilities drop ALL")
        check(not sc.get("privileged", False), f"{name}: not privileged")
        res = c.get("resources", {})
        check(bool(res.get("requests")) and bool(res.get("limits")), f"{name}: resource requests and limits")
    uid = gateway.get("securityContext", {}).get("runAsUser", pod_sc.get("runAsUser"))
    check(image["user"] is not None and image["user"].isdigit() and int(image["user"]) == uid,
          f"the gateway's uid {uid} is the Dockerfile's numeric USER ({image['user']})")
    for c in apps:
        for p in c.get("ports", []):
            check(p["containerPort"] not in (data_port, admin_port),
                  f"{c['name']}: does not claim the gateway's ports")

    # Shutdown: the grace period covers the preStop pause and the drain.
    pre_stop = gateway.get("lifecycle", {}).get("preStop", {})
    pause = 0
    command = pre_stop.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0].endswith("sleep"):
        pause = int(command[1])
    elif "sleep" in pre_stop:
        pause = int(pre_stop["sleep"]["seconds"])
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check(grace > drain + pause,
          f"terminationGracePeriodSeconds {grace} > preStop {pause} s + limits.drain_seconds {drain}")

    # Services: data port only.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for svc in by_kind["Service"]:
        selector = svc["spec"].get("selector", {})
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        for p in svc["spec"]["ports"]:
            target = port_of(gateway, p.get("targetPort", p["port"]))
            check(target != admin_port and p["port"] != admin_port,
                  f"Service {svc['metadata']['name']} port {p['port']} does not expose the admin port")
            check(target == data_port, f"Service {svc['metadata']['name']} port {p['port']} targets the data port {data_port}")
    for policy in by_kind.get("NetworkPolicy", []):
        for rule in policy["spec"].get("ingress", []):
            ports = [port_of(gateway, p.get("port")) for p in rule.get("ports", [])]
            check(bool(ports) and admin_port not in ports,
                  f"NetworkPolicy {policy['metadata']['name']} opens only {ports}, not the admin port")


if __name__ == "__main__":
    for manifest, config in PAIRS:
        passes.append(f"--- {os.path.relpath(manifest)} with {os.path.relpath(config)}")
        main(manifest, config)
    for p in passes:
        print(f"ok    {p}" if not p.startswith("---") else p)
    for f in failures:
        print(f"FAIL  {f}")
    print(f"{len(passes) - len(PAIRS)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)
