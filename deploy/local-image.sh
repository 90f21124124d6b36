#!/usr/bin/env bash
# Builds the Easy-Note image and puts it into a local cluster, so that
#   kubectl apply -k deploy/k8s/overlays/local
# starts it without a registry (the manifests name `easy-note:<tag>`, and a
# tag other than `latest` is only pulled when the node does not have it).
#
#   deploy/local-image.sh            the cluster of kubectl's current context
#   deploy/local-image.sh kind       kind (cluster $KIND_CLUSTER_NAME, default kind)
#   deploy/local-image.sh minikube   minikube (profile $MINIKUBE_PROFILE, default minikube)
#   deploy/local-image.sh build      only build: Docker Desktop, Rancher Desktop and
#                                    OrbStack clusters see the local engine's images
#
# For a remote cluster, push to a registry instead and set the image in the
# overlay (see deploy/k8s/overlays/aliyun/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: $0 [kind|minikube|build]" >&2
  exit 2
}

tag="$(sed -n 's/^ *newTag: *//p' deploy/k8s/base/kustomization.yaml | head -n 1)"
image="easy-note:${tag:?no newTag in deploy/k8s/base/kustomization.yaml}"

target="${1:-}"
if [[ -z "$target" ]]; then
  context="$(kubectl config current-context 2>/dev/null || true)"
  case "$context" in
    kind-*) target=kind; KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-${context#kind-}}" ;;
    minikube*) target=minikube; MINIKUBE_PROFILE="${MINIKUBE_PROFILE:-$context}" ;;
    docker-desktop | rancher-desktop | orbstack) target=build ;;
    *)
      echo "kubectl's current context is '${context:-none}', not a kind or minikube cluster:" >&2
      usage
      ;;
  esac
fi
case "$target" in
  kind) command -v kind >/dev/null || { echo "kind is not installed" >&2; exit 1; } ;;
  minikube) command -v minikube >/dev/null || { echo "minikube is not installed" >&2; exit 1; } ;;
  build) ;;
  *) usage ;;
esac

echo "building $image (deploy/Dockerfile)"
docker build -f deploy/Dockerfile -t "$image" .
case "$target" in
  kind) kind load docker-image "$image" --name "${KIND_CLUSTER_NAME:-kind}" ;;
  minikube) minikube image load "$image" --profile "${MINIKUBE_PROFILE:-minikube}" ;;
  build) ;;
esac
echo "$image is available to the cluster; next: kubectl apply -k deploy/k8s/overlays/local"
