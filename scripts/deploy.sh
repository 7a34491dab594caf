#!/usr/bin/env bash
# Deploys an overlay of deploy/k8s to the cluster of the current kubectl context:
#
#   scripts/deploy.sh dev  --registry myacr.azurecr.io --tag 0.1.0-0123456789ab
#   scripts/deploy.sh prod --registry myacr.azurecr.io --tag 0.1.0-0123456789ab --only delivery
#   scripts/deploy.sh dev  --dry-run ...      render only (target/deploy/OVERLAY.yaml), no cluster
#
# --registry/--tag replace the overlay's images (REGISTRY/fabrikam-SERVICE:TAG, the names
# scripts/build-images.sh pushes); --only SERVICE applies that service's objects alone (a
# release of one service; for workflow, also its supervisor), with the shared ConfigMap and every
# NetworkPolicy. For dev, missing Secrets are created: fabrikam-backends with random passwords
# for the in-cluster PostgreSQL and Redis, and a self-signed certificate in gateway-tls. For
# prod, Secret fabrikam-backends must exist (deploy/README.md). Either way it must hold every
# key the manifests read (a Secret made before a service was added may not: the script stops and
# names the missing keys). Then it applies the manifests (server-side) and waits for the rollouts.
# Every service binary needs its Deployment in the overlay (deploy/k8s/base/SERVICE.yaml) and
# its image in the overlay's images list; the script stops and says so when one is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

overlay=${1:-}
shift || true
registry=
tag=
only=
dry_run=false
while [ $# -gt 0 ]; do
  case $1 in
    --registry) registry=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    *) echo "deploy: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$overlay" ] || [ ! -f "deploy/k8s/overlays/$overlay/kustomization.yaml" ]; then
  echo "usage: $0 OVERLAY [--registry R] [--tag T] [--only SERVICE] [--dry-run]; OVERLAY is one of: $(cd deploy/k8s/overlays && echo */ | tr -d /)" >&2
  exit 2
fi
if [ "$tag" = latest ]; then
  echo "deploy: never deploy latest; give the VERSION-REVISION tag scripts/build-images.sh printed" >&2
  exit 2
fi
if [ -n "$only" ] && [ ! -f "services/$only/Cargo.toml" ]; then
  echo "deploy: no service $only" >&2
  exit 2
fi
kubectl=$(command -v kubectl || echo target/deploy-check/venv/bin/kubectl)

# The service binaries (one image and one Deployment each): every crate's [[bin]] names.
binaries_of() {
  awk '/^\[\[bin\]\]/ { in_bin = 1; next } /^\[/ { in_bin = 0 }
    in_bin && /^name *=/ { gsub(/^name *= *"|".*$/, ""); print }' "services/$1/Cargo.toml"
}
binaries=()
for dir in services/*/; do
  mapfile -t -O "${#binaries[@]}" binaries < <(binaries_of "$(basename "$dir")")
done
# What --only SERVICE deploys: that crate's binaries (workflow: workflow and supervisor).
names=()
for binary in "${binaries[@]}"; do names+=("${binary#fabrikam-}"); done
if [ -n "$only" ]; then
  names=()
  for binary in $(binaries_of "$only"); do names+=("${binary#fabrikam-}"); done
fi
namespace=$(sed -n 's/^namespace: //p' "deploy/k8s/overlays/$overlay/kustomization.yaml")

# A kustomization of our own on top of the overlay, for the images (kustomize wants it inside
# the repository: it refuses absolute paths).
work=target/deploy/$overlay
mkdir -p "$work"
base_render=$("$kubectl" kustomize "deploy/k8s/overlays/$overlay")
{
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources: [../../../deploy/k8s/overlays/$overlay]"
  echo "images:"
  for binary in "${binaries[@]}"; do
    current=$(grep -m1 -oE "image: [^ ]*/$binary:[^ ]+" <<<"$base_render" | sed 's/^image: //; s/:[^:]*$//' || true)
    if [ -z "$current" ]; then
      if grep -qE "image: $binary\$" <<<"$base_render"; then
        echo "deploy: overlay $overlay does not set the image of $binary: add" \
          "{name: $binary, newName: REGISTRY/$binary, newTag: TAG} to deploy/k8s/overlays/$overlay/kustomization.yaml" >&2
      else
        echo "deploy: overlay $overlay has no Deployment running $binary (services/ has it): add" \
          "deploy/k8s/base/${binary#fabrikam-}.yaml and list it in deploy/k8s/base/kustomization.yaml" >&2
      fi
      exit 1
    fi
    new_name=${registry:+$registry/$binary}
    new_name=${new_name:-$current}
    echo "  - name: $current"
    echo "    newName: $new_name"
    [ -z "$tag" ] || echo "    newTag: \"$tag\""
  done
} >"$work/kustomization.yaml"
rendered=target/deploy/$overlay.yaml
"$kubectl" kustomize "$work" >"$rendered"
echo "deploy: $overlay -> namespace $namespace, $(grep -c '^kind:' "$rendered") objects in $rendered"
grep -oE 'image: [^ ]+' "$rendered" | sort -u | sed 's/^/  /'

# The keys of Secret fabrikam-backends the Deployments and StatefulSets named in the arguments
# read (every workload's without arguments), one per line.
secret_keys() {
  awk -v wanted=" $* " '
    function flush() {
      if (kind ~ /^(Deployment|StatefulSet)$/ && (wanted == "  " || index(wanted, " " name " ")))
        for (k in keys) print k
      split("", keys); kind = ""; name = ""; ref = 0
    }
    /^---$/ { flush(); next }
    /^kind: / { kind = $2 }
    /^  name: / && name == "" { name = $2 }
    ref && $1 == "key:" { keys[$2] = 1 }
    ref && $1 != "key:" && $1 != "name:" { ref = 0 }
    /secretKeyRef:/ { ref = 1 }
    END { flush() }' "$rendered" | sort -u
}
if [ -n "$only" ]; then
  mapfile -t needed_keys < <(secret_keys "${names[@]}")
else
  mapfile -t needed_keys < <(secret_keys)
fi
if [ -z "$only" ] && [ ${#needed_keys[@]} -eq 0 ]; then
  echo "deploy: found no Secret keys in $rendered; did the manifests change shape?" >&2
  exit 1
fi
echo "deploy: Secret fabrikam-backends must hold: ${needed_keys[*]:-nothing}"
# --only applies the NetworkPolicies as well: they are namespace-wide and carry no service's
# label, and a release may need a rule the running ones lack (a new service, a new call, a
# service that now reaches NATS).
policies=target/deploy/$overlay-networkpolicies.yaml
awk 'BEGIN { RS = "\n---\n" } /(^|\n)kind: NetworkPolicy(\n|$)/ { printf "---\n%s\n", $0 }' "$rendered" >"$policies"
if [ -n "$only" ]; then
  echo "deploy: with --only $only, also the $(grep -c '^kind: NetworkPolicy' "$policies") NetworkPolicies ($policies)"
fi
if $dry_run; then
  echo "deploy: dry run; would apply ${only:+the objects of $only in }$rendered"
  exit 0
fi

"$kubectl" get namespace "$namespace" >/dev/null 2>&1 || "$kubectl" create namespace "$namespace"
if ! "$kubectl" -n "$namespace" get secret fabrikam-backends >/dev/null 2>&1; then
  if [ "$overlay" != dev ]; then
    echo "deploy: Secret fabrikam-backends is missing in namespace $namespace; create it first (deploy/README.md)" >&2
    exit 1
  fi
  random() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
  pg=$(random)
  redis=$(random)
  "$kubectl" -n "$namespace" create secret generic fabrikam-backends \
    --from-literal=postgres-password="$pg" \
    --from-literal=redis-password="$redis" \
    --from-literal=bus-url="nats://nats:4222" \
    --from-literal=package-db-url="postgres://fabrikam:$pg@postgres:5432/fabrikam_package" \
    --from-literal=dronescheduler-db-url="postgres://fabrikam:$pg@postgres:5432/fabrikam_dronescheduler" \
    --from-literal=ingestion-db-url="postgres://fabrikam:$pg@postgres:5432/fabrikam_ingestion" \
    --from-literal=workflow-db-url="postgres://fabrikam:$pg@postgres:5432/fabrikam_workflow" \
    --from-literal=deliveryhistory-db-url="postgres://fabrikam:$pg@postgres:5432/fabrikam_deliveryhistory" \
    --from-literal=account-db-url="postgres://fabrikam:$pg@postgres:5432/fabrikam_account" \
    --from-literal=identity-secret="$(random)$(random)" \
    --from-literal=delivery-db-url="redis://:$redis@redis:6379/0?prefix=fabrikam"
  echo "deploy: created Secret fabrikam-backends with random passwords"
fi
# A Secret made before a service was added lacks its key; its pods would wait forever in
# CreateContainerConfigError, so stop here and say which keys to add.
# shellcheck disable=SC2016 # a Go template, not a shell expansion
present=$("$kubectl" -n "$namespace" get secret fabrikam-backends -o go-template='{{range $k, $v := .data}}{{$k}}{{"\n"}}{{end}}')
missing=()
for key in "${needed_keys[@]}"; do
  grep -qxF "$key" <<<"$present" || missing+=("$key")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deploy: Secret fabrikam-backends in namespace $namespace lacks ${missing[*]}: add them" \
    "(kubectl -n $namespace patch secret fabrikam-backends --type merge -p '{\"stringData\": {\"KEY\": \"VALUE\"}}';" \
    "deploy/README.md, \"Adding a service to a running environment\")" >&2
  exit 1
fi
if [ "$overlay" = dev ] && ! "$kubectl" -n "$namespace" get secret gateway-tls >/dev/null 2>&1; then
  host=$(grep -m1 -oE 'host: [^ ]+' "$rendered" | sed 's/^host: //')
  certs=$(mktemp -d)
  openssl req -x509 -newkey rsa:2048 -nodes -days 90 -subj "/CN=$host" -addext "subjectAltName=DNS:$host" \
    -keyout "$certs/tls.key" -out "$certs/tls.crt" 2>/dev/null
  "$kubectl" -n "$namespace" create secret tls gateway-tls --cert "$certs/tls.crt" --key "$certs/tls.key"
  rm -rf "$certs"
  echo "deploy: created a self-signed certificate for $host in Secret gateway-tls"
fi

apply=("$kubectl" apply --server-side --field-manager=fabrikam-deploy -f "$rendered")
if [ -n "$only" ]; then
  # The service's own objects, the shared ConfigMap its pods name (by content hash) and the
  # NetworkPolicies.
  "${apply[@]}" -l app.kubernetes.io/component=config
  "$kubectl" apply --server-side --field-manager=fabrikam-deploy -f "$policies"
  "${apply[@]}" -l "app.kubernetes.io/name in ($(IFS=,; echo "${names[*]}"))"
else
  "${apply[@]}"
fi
for name in "${names[@]}"; do
  "$kubectl" -n "$namespace" rollout status "deployment/$name" --timeout=10m
done
echo "deploy: $overlay is rolled out"
