#!/usr/bin/env bash
# Validates the deployment files without a Docker engine or a cluster:
# - docker-compose.yml with `docker-compose config` (Debian's package);
# - both Kubernetes overlays (and the aliyun overlay's optional alb/ set)
#   rendered with `kubectl kustomize`, and every object checked against the
#   Kubernetes schemas (`kubernetes-validate`);
# - the rules no schema knows, on the rendered overlays and the compose file
#   (deploy/check-manifests.py: probes, start-up and shutdown budgets from
#   the services' settings, the ALB Service type, optional vs required
#   Secrets, each Deployment's own Secrets, mutual TLS and exec probes,
#   NetworkPolicies allowing exactly the suite's calls, compose's generated
#   keys and loopback-only Nacos, no replicas beside an HPA and a CPU request
#   its target can use, no pod-level imagePullSecrets, compose's restart
#   policies, Jaeger's bounded store), after its self-test proves that each
#   rule can fail;
# - the telemetry pipeline (deploy/observability/): the collector's config
#   against the schema of its components, prometheus.yml with Prometheus's
#   own `promtool check config`, the Grafana dashboard's structure and every
#   query through Prometheus's parser, and the wiring between compose, the
#   local overlay and those files (deploy/check-observability.py), after
#   its self-test proves that each rule can fail;
# - deploy/local-image.sh and deploy/local-secrets.sh parse.
# Installs what it needs from Debian when missing; the Python packages come
# from scripts/requirements.txt through scripts/py.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=1.33.0               # the schemas to validate against (ACK's current line)

if ! command -v docker-compose >/dev/null 2>&1; then
  echo "installing docker-compose (Debian) to validate docker-compose.yml" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null
fi
if ! command -v promtool >/dev/null 2>&1; then
  # Debian's prometheus package brings promtool (2.42: older than the image,
  # so prometheus.yml keeps to fields both know).
  echo "installing prometheus (Debian) for promtool" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl is needed to render the kustomize overlays and was not found" >&2
  exit 1
fi

echo "docker-compose.yml: docker-compose config"
docker-compose -f docker-compose.yml config -q

for overlay in local aliyun aliyun/alb; do
  rendered="$(mktemp)"
  kubectl kustomize "deploy/k8s/overlays/$overlay" > "$rendered"
  count="$(grep -c '^kind:' "$rendered")"
  echo "overlay $overlay: $count objects, validating against Kubernetes $K8S_VERSION"
  # (alb/'s AlbConfig is a custom resource: no schema, only a warning.)
  scripts/py -m kubernetes_validate --strict -k "$K8S_VERSION" "$rendered" | grep -v '^INFO' || true
  # --strict fails on unknown fields; grep above only quiets the per-object OK lines.
  scripts/py -m kubernetes_validate --strict -k "$K8S_VERSION" --quiet --no-warn "$rendered"
  rm -f "$rendered"
done

echo "deploy/check-manifests.py --self-test"
scripts/py deploy/check-manifests.py --self-test
echo "deploy/check-manifests.py"
scripts/py deploy/check-manifests.py deploy/k8s/overlays/local deploy/k8s/overlays/aliyun

echo "deploy/check-observability.py --self-test"
scripts/py deploy/check-observability.py --self-test
echo "deploy/check-observability.py"
scripts/py deploy/check-observability.py

bash -n deploy/local-image.sh
bash -n deploy/local-secrets.sh
echo "deploy: compose file, both overlays and the telemetry pipeline are valid and keep their rules"
