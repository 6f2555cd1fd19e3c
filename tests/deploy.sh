#!/usr/bin/env bash
# Checks the files that deploy vnid (deploy/), as far as they can be checked
# on a machine with no container engine and no cluster:
#   - the image: the binary needs no shared library the distroless runtime
#     lacks, nor a glibc newer than its; the Dockerfile builds with the
#     pinned toolchain, on that runtime, as a non-root user;
#   - Kubernetes: every manifest of the kustomization validates against the
#     Kubernetes schemas (kubernetes-validate, offline), and the parts refer
#     to each other correctly (selectors, ports, probes, grace period);
#   - the ConfigMap's vnid.toml and the compose file's pass `vnid config
#     check`, with their key and certificate files made where they name them;
#   - the alert rules pass `promtool check rules` and their tests; the
#     dashboard is JSON, and every metric that it and the rules query is one
#     vnid exports.
# Run by tests/run-all.sh after the cargo tests (it uses their binary):
#   bash tests/deploy.sh [path/to/vnid]
set -euo pipefail
cd "$(dirname "$0")/.."

vnid="$(realpath "${1:-target/debug/vnid}")"
[ -x "$vnid" ] || { echo "no vnid binary at $vnid (cargo build first)" >&2; exit 1; }
venv="target/deploy-venv"
if ! "$venv/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
  echo "== preparing kubernetes-validate in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate>=1.30'
fi
py="$venv/bin/python"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "== the image: shared libraries and glibc"
# What gcr.io/distroless/cc-debian12 ships: glibc (Debian 12: 2.36) and
# libgcc. Nothing else may be needed (no libssl: rustls; no libstdc++).
allowed=" libc.so.6 libm.so.6 libgcc_s.so.1 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1 libpthread.so.0 libdl.so.2 librt.so.1 "
needed=$(readelf -d "$vnid" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')
[ -n "$needed" ] || fail "readelf found no NEEDED entries in $vnid"
for lib in $needed; do
  [[ "$allowed" == *" $lib "* ]] || fail "vnid needs $lib, which the distroless cc runtime does not ship"
done
! ldd "$vnid" | grep -q 'not found' || fail "a library vnid needs is missing here: $(ldd "$vnid")"
newest=$(objdump -T "$vnid" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
[ "$(printf '%s\n2.36\n' "$newest" | sort -V | tail -1)" = "2.36" ] \
  || fail "vnid needs glibc $newest; Debian 12 (the runtime) has 2.36"
echo "needs: $(echo $needed) (glibc $newest at most)"

echo "== the Dockerfile"
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
grep -q "^ARG RUST_VERSION=$toolchain\$" deploy/Dockerfile \
  || fail "deploy/Dockerfile does not build with the pinned toolchain $toolchain"
[ "$(grep -c '^FROM ' deploy/Dockerfile)" -eq 2 ] || fail "deploy/Dockerfile: two stages expected"
grep -q '^FROM docker.io/library/rust:${RUST_VERSION}-' deploy/Dockerfile || fail "the build stage is not the pinned rust image"
[ "$(grep '^FROM ' deploy/Dockerfile | tail -1)" = "FROM gcr.io/distroless/cc-debian12:nonroot" ] \
  || fail "the runtime stage is not distroless cc (Debian 12, nonroot)"
user=$(sed -n 's/^USER //p' deploy/Dockerfile | tail -1)
[ -n "$user" ] && [ "${user%%:*}" != "0" ] && [ "${user%%:*}" != "root" ] || fail "the image runs as root"
grep -q '^ENTRYPOINT \["/usr/local/bin/vnid", "serve"\]' deploy/Dockerfile || fail "the entrypoint is not vnid serve"
[ "$(sed -n '/^FROM gcr.io/,$p' deploy/Dockerfile | grep -c '^COPY')" -eq 1 ] || fail "the runtime stage copies more than the binary"
grep -q '^target/' .dockerignore || fail ".dockerignore does not keep target/ out of the build context"

# Key and certificate files where a configuration names them, under $1
# (which stands for the configuration's root of secrets).
make_secrets() { # DIR SIGNING CHECKPOINT SUBJECT CACHE CERT KEY CA ES256
  local dir=$1
  mkdir -p "$(dirname "$dir/$2")"
  "$vnid" keygen --out "$dir/$2" >/dev/null
  "$vnid" keygen --out "$dir/$3" >/dev/null
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$9" 2>/dev/null
  head -c 32 /dev/urandom >"$dir/$4"
  head -c 32 /dev/urandom >"$dir/$5"
  "$vnid" dev-certs --out "$work/certs" >/dev/null
  mkdir -p "$(dirname "$dir/$6")"
  cp "$work/certs/server.pem" "$dir/$6"
  cp "$work/certs/server.key" "$dir/$7"
  cp "$work/certs/ca.pem" "$dir/$8"
}
config_check() { # TOML [NAME=VALUE...]
  local said toml=$1
  shift
  if ! said=$(env -u VNID__ADMIN_LISTEN "$@" "$vnid" config check --config "$toml" 2>&1); then
    fail "vnid config check $1: $said"
  fi
  echo "$said"
}

echo "== Kubernetes: schemas"
"$py" - deploy/k8s >"$work/k8s-files" <<'PY'
import pathlib, sys, yaml
root = pathlib.Path(sys.argv[1])
kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
listed = kustomization["resources"]
present = sorted(p.name for p in root.glob("*.yaml") if p.name != "kustomization.yaml")
missing = [r for r in listed if not (root / r).is_file()]
unlisted = [p for p in present if p not in listed]
if missing or unlisted:
    sys.exit(f"kustomization.yaml: missing {missing}, not listed {unlisted}")
for r in listed:
    print(root / r)
PY
# Validated against the newest schemas and the oldest still supported.
for version in 1.37.0 1.31.0; do
  # shellcheck disable=SC2046
  out=$("$venv/bin/kubernetes-validate" --strict -k "$version" $(cat "$work/k8s-files") 2>&1) \
    || fail "kubernetes-validate ($version): $out"
  ! grep -q '^ERROR' <<<"$out" || fail "kubernetes-validate ($version): $out"
done
# The one kind with no schema there (a CRD of the Prometheus Operator) is
# checked by the cross-checks below.
grep '^WARN' <<<"$out" | grep -v 'kind ServiceMonitor' && fail "unexpected warnings: $out"
echo "$(wc -l <"$work/k8s-files") manifests valid"

echo "== Kubernetes: the parts fit together"
"$py" - deploy/k8s "$work/k8s-vnid.toml" <<'PY'
import pathlib, sys, tomllib, yaml
root, toml_out = pathlib.Path(sys.argv[1]), sys.argv[2]
docs = {}
for path in sorted(root.glob("*.yaml")):
    if path.name == "kustomization.yaml":
        continue
    for doc in yaml.safe_load_all(path.read_text()):
        docs[(doc["kind"], doc["metadata"]["name"])] = doc
def need(ok, why):
    if not ok:
        sys.exit(why)
dep = docs[("Deployment", "vnid")]
pod = dep["spec"]["template"]
labels = pod["metadata"]["labels"]
selects = lambda sel: all(labels.get(k) == v for k, v in sel.items())
need(selects(dep["spec"]["selector"]["matchLabels"]), "the Deployment does not select its pods")
need(dep["spec"]["replicas"] >= 2, "fewer than two replicas")
svc = docs[("Service", "vnid")]
need(selects(svc["spec"]["selector"]), "the Service selects no vnid pod")
need(selects(docs[("PodDisruptionBudget", "vnid")]["spec"]["selector"]["matchLabels"]), "the PDB selects no vnid pod")
need(selects(docs[("NetworkPolicy", "vnid")]["spec"]["podSelector"]["matchLabels"]), "the NetworkPolicy selects no vnid pod")
hpa = docs[("HorizontalPodAutoscaler", "vnid")]["spec"]
need(hpa["scaleTargetRef"]["name"] == "vnid" and hpa["minReplicas"] >= 2, "the HPA")
mon = docs[("ServiceMonitor", "vnid")]["spec"]
need(all(svc["metadata"]["labels"].get(k) == v for k, v in mon["selector"]["matchLabels"].items()), "the ServiceMonitor selects no Service")
svc_ports = {p["name"] for p in svc["spec"]["ports"]}
need(all(e["port"] in svc_ports and e["path"] == "/metrics" for e in mon["endpoints"]), "the ServiceMonitor scrapes no Service port's /metrics")
spec = pod["spec"]
need(spec["securityContext"]["runAsNonRoot"] is True, "pods may run as root")
(c,) = spec["containers"]
need(c["securityContext"]["readOnlyRootFilesystem"] is True, "the root filesystem is writable")
need(c["securityContext"]["allowPrivilegeEscalation"] is False, "privilege escalation allowed")
need("requests" in c["resources"] and "limits" in c["resources"], "no resources")
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
need(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}, "liveness is not /healthz on the admin port")
need(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}, "readiness is not /readyz on the admin port")
need(any(t["maxSkew"] for t in spec["topologySpreadConstraints"]), "no topology spread")
cm = docs[("ConfigMap", "vnid-config")]
toml = cm["data"]["vnid.toml"]
config = tomllib.loads(toml)
need(ports["admin"] == int(config["admin_listen"].rsplit(":", 1)[1]), "the admin port differs from admin_listen")
need(ports["grpc"] == int(config["listen"].rsplit(":", 1)[1]), "the gRPC port differs from listen")
drain = config["server"]["drain_timeout_ms"] / 1000
pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
need(spec["terminationGracePeriodSeconds"] > pre_stop + drain, "the grace period is not longer than preStop and the drain")
need(config["quota"]["instances"] >= hpa["maxReplicas"], "quota.instances is below the HPA's maximum")
mounted = {v["name"]: v for v in spec["volumes"]}
for m in c["volumeMounts"]:
    need(m["name"] in mounted, f"mount {m['name']} has no volume")
for v in spec["volumes"]:
    if "configMap" in v:
        need(("ConfigMap", v["configMap"]["name"]) in docs, f"no ConfigMap {v['configMap']['name']}")
for kind, name in [("Job", "vnid-import-full"), ("CronJob", "vnid-delta")]:
    job = docs[(kind, name)]
    tpl = job["spec"]["jobTemplate"]["spec"]["template"] if kind == "CronJob" else job["spec"]["template"]
    args = tpl["spec"]["containers"][0]["args"]
    need(args[0] == "import" and ("--delta" in args) == (kind == "CronJob"), f"{name}: {args}")
need(docs[("CronJob", "vnid-delta")]["spec"]["concurrencyPolicy"] == "Forbid", "deltas may overlap")
pathlib.Path(toml_out).write_text(toml)
# The Deployment's environment, as the pods see it (a Secret's value: a
# stand-in of the same kind).
with open(toml_out + ".env", "w") as env:
    for e in c["env"]:
        value = e.get("value", "redis://vnid-redis.vnid.svc:6379/")
        env.write(f"{e['name']}={value}\n")
PY
echo "Deployment, Service, PDB, HPA, NetworkPolicy, ServiceMonitor, Job and CronJob agree"

echo "== Kubernetes: the ConfigMap's vnid.toml"
etc="$work/k8s/etc/vnid"
sed "s|/etc/vnid/|$etc/|g" "$work/k8s-vnid.toml" >"$work/k8s.toml"
make_secrets "$etc" keys/signing.pem keys/checkpoint.pem keys/subject.key keys/cache.key tls/tls.crt tls/tls.key tls/ca.crt keys/es256.pem
mapfile -t pod_env <"$work/k8s-vnid.toml.env"
said=$(config_check "$work/k8s.toml" "${pod_env[@]}")
for want in "mutual TLS" "mirror Postgres" "cache Redis" "traces to"; do
  grep -q "$want" <<<"$said" || fail "the ConfigMap's vnid.toml: no \"$want\" in: $said"
done
! grep -q "generated" <<<"$said" || fail "the ConfigMap leaves keys to be generated: $said"
echo "$said"

echo "== compose"
"$py" - deploy/compose.yaml "$work/compose-vnid.toml" <<'PY'
import pathlib, sys, yaml
compose = yaml.safe_load(pathlib.Path(sys.argv[1]).read_text())
services = compose["services"]
def need(ok, why):
    if not ok:
        sys.exit(f"deploy/compose.yaml: {why}")
for want in ["vnid", "postgres", "redis", "secrets", "demo-import"]:
    need(want in services, f"no service {want}")
for name, service in services.items():
    for dep, how in (service.get("depends_on") or {}).items():
        need(dep in services, f"{name} depends on a missing {dep}")
        if how["condition"] == "service_completed_successfully":
            need("restart" not in services[dep], f"{dep} is one-shot, yet restarts")
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        need(source in compose["volumes"], f"{name}: undeclared volume {source}")
vnid = services["vnid"]
need(any(p.endswith(":9464") for p in vnid["ports"]), "the admin port is not published")
need(any(p.endswith(":50051") for p in vnid["ports"]), "the gRPC port is not published")
need(vnid["depends_on"]["demo-import"]["condition"] == "service_completed_successfully", "vnid starts before the demo population is loaded")
need("noeviction" in services["redis"]["command"], "Redis may evict")
need(services["postgres"]["environment"].get("POSTGRES_PASSWORD_FILE"), "the Postgres password is not a file")
need(services["demo-import"]["entrypoint"][1] == "import", "demo-import imports nothing")
need(vnid["build"]["dockerfile"] == "deploy/Dockerfile" and vnid["build"]["context"] == "..", "vnid is not built from deploy/Dockerfile")
pathlib.Path(sys.argv[2]).write_text(compose["configs"]["vnid-toml"]["content"])
PY
run="$work/compose/run/secrets"
sed "s|/run/secrets/|$run/|g" "$work/compose-vnid.toml" >"$work/compose.toml"
make_secrets "$run" vnid/signing.pem vnid/checkpoint.pem vnid/subject.key vnid/cache.key tls/server.pem tls/server.key tls/ca.pem vnid/es256.pem
said=$(config_check "$work/compose.toml")
grep -q "Postgres" <<<"$said" && grep -q "Redis" <<<"$said" || fail "unexpected: $said"
echo "$said"
# The secrets service writes the keys with openssl; vnid must read them.
openssl genpkey -algorithm ed25519 -out "$run/vnid/signing.pem" 2>/dev/null
config_check "$work/compose.toml" >/dev/null
echo "an openssl Ed25519 key (as the secrets service makes them) loads"

echo "== alert rules and the dashboard"
promtool check rules deploy/prometheus/alerts.yaml
(cd deploy/prometheus && promtool test rules alerts.test.yaml)
"$py" - deploy/grafana/vnid-dashboard.json deploy/prometheus/alerts.yaml src <<'PY'
import json, pathlib, re, sys, yaml
dashboard = json.loads(pathlib.Path(sys.argv[1]).read_text())
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
rules = yaml.safe_load(pathlib.Path(sys.argv[2]).read_text())
exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
# Every metric family vnid registers: its names are string literals.
source = "".join(p.read_text() for p in pathlib.Path(sys.argv[3]).rglob("*.rs"))
exported = set(re.findall(r'"((?:vnid|grpc_server)_[a-z_]+)"', source))
used = set()
for expr in exprs:
    for name in re.findall(r"\b((?:vnid|grpc_server)_[a-z_]+)", expr):
        used.add(re.sub(r"_(bucket|sum|count)$", "", name) if name not in exported else name)
unknown = sorted(used - exported)
if unknown:
    sys.exit(f"queried but not exported by vnid: {unknown}")
print(f"{len(exprs)} queries over {len(used)} metrics, all exported")
PY
echo "== deploy/: all checks passed"
