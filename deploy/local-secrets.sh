#!/usr/bin/env bash
# Creates the Secrets the local overlay names, with values made here and
# now, so that nothing secret is committed and no demo key can reach a
# production install:
#
#   api-gateway-tls, user-service-tls, note-service-tls
#                       kubernetes.io/tls (tls.crt, tls.key, ca.crt): each
#                       service's certificate from `easy-note dev-certs`,
#                       one new development CA for the three
#   api-gateway-jwt     EASYNOTE_JWT_SECRET, a random key (dev-certs --jwt-secret)
#   user-service-db, note-service-db
#                       EASYNOTE_DATABASE_URL for the in-cluster MySQL
#   mysql-credentials   MYSQL_DATABASE, MYSQL_USER, MYSQL_PASSWORD, MYSQL_ROOT_PASSWORD
#                       (random passwords; the URLs above use the same one)
#   nacos-server        NACOS_AUTH_TOKEN, NACOS_AUTH_IDENTITY_KEY/VALUE (random):
#                       the key Nacos signs its logins with, and its identity
#   nacos-admin         NACOS_PASSWORD (random): the password of Nacos's admin
#                       `nacos`, which Nacos sets as it starts; only the Nacos
#                       pod reads it
#   easy-note-nacos     NACOS_USERNAME (easy-note) and NACOS_PASSWORD (random):
#                       the least-privilege user the services log in as
#                       (register, subscribe, read configuration), which Nacos
#                       creates as it starts
#
#   deploy/local-secrets.sh               create the missing ones, keep the others
#   deploy/local-secrets.sh --rotate-tls  also replace the three TLS Secrets (new CA)
#
# Run it once before `kubectl apply -k deploy/k8s/overlays/local` (pods
# wait in CreateContainerConfigError / ContainerCreating until it has).
# Existing Secrets are kept, so a rerun changes nothing: the database
# passwords must stay those MySQL was initialised with.
#
# Rotation: the services re-read their certificate files every
# EASYNOTE_TLS_RELOAD_INTERVAL (5s), and the kubelet updates mounted Secrets
# in place within about a minute, so --rotate-tls needs no restart. A new
# CA, though, reaches the pods one by one: until every pod has the new set
# (about a minute), calls between a pod with the old set and one with the
# new fail their handshake. Rotating leaf certificates under the same CA
# (what cert-manager does) has no such gap; dev-certs always makes a new CA.
#
# `easy-note dev-certs` runs from $EASY_NOTE, else target/release/easy-note,
# else `easy-note` on PATH, else the image deploy/local-image.sh built.
# Namespace: $NAMESPACE (default easy-note).
set -euo pipefail
cd "$(dirname "$0")/.."

namespace="${NAMESPACE:-easy-note}"
rotate_tls=false
case "${1:-}" in
  "") ;;
  --rotate-tls) rotate_tls=true ;;
  *) echo "usage: $0 [--rotate-tls]" >&2; exit 2 ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"

kc() { kubectl -n "$namespace" "$@"; }
exists() { kc get secret "$1" >/dev/null 2>&1; }
# A random value of URL- and shell-safe characters, from $1 random bytes.
random() { head -c "$1" /dev/urandom | base64 | tr -d '\n/+='; }
# Creates or replaces Secret $1 from `kubectl create secret` arguments.
apply_secret() {
  local name="$1"
  shift
  kc create secret "$@" "$name" --dry-run=client -o yaml | kc apply -f - >/dev/null
  echo "  $name: written"
}
keep() { echo "  $1: exists, kept"; }

kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

# --- the development CA, certificates and JWT key -----------------------
dev_certs() {
  local out="$work/certs"
  if [[ -n "${EASY_NOTE:-}" ]]; then
    "$EASY_NOTE" dev-certs --out "$out" --jwt-secret
  elif [[ -x target/release/easy-note ]]; then
    target/release/easy-note dev-certs --out "$out" --jwt-secret
  elif command -v easy-note >/dev/null 2>&1; then
    easy-note dev-certs --out "$out" --jwt-secret
  else
    local tag
    tag="$(sed -n 's/^ *newTag: *//p' deploy/k8s/base/kustomization.yaml | head -n 1)"
    mkdir -p "$out"
    docker run --rm --user "$(id -u):$(id -g)" -v "$out:/out" "easy-note:${tag:?}" \
      dev-certs --out /out --jwt-secret
  fi >/dev/null
}
dev_certs
certs="$work/certs"

echo "Secrets in namespace $namespace:"
tls_missing=false
for deployment in api-gateway user-service note-service; do
  exists "$deployment-tls" || tls_missing=true
done
for pair in api-gateway:easy-note-gateway user-service:easy-note-user note-service:easy-note-note; do
  deployment="${pair%%:*}" identity="${pair#*:}"
  # The three share one CA: write all of them, or none.
  if $rotate_tls || $tls_missing; then
    apply_secret "$deployment-tls" generic --type=kubernetes.io/tls \
      --from-file=tls.crt="$certs/$identity.pem" \
      --from-file=tls.key="$certs/$identity.key" \
      --from-file=ca.crt="$certs/ca.pem"
  else
    keep "$deployment-tls"
  fi
done

if exists api-gateway-jwt; then
  keep api-gateway-jwt
else
  apply_secret api-gateway-jwt generic --from-file=EASYNOTE_JWT_SECRET="$certs/jwt-secret"
fi

# --- MySQL and the services' database URLs -------------------------------
if exists mysql-credentials; then
  keep mysql-credentials
  kc get secret mysql-credentials -o jsonpath='{.data.MYSQL_PASSWORD}' | base64 -d > "$work/db-password"
else
  random 24 > "$work/db-password"
  random 24 > "$work/root-password"
  printf easynote > "$work/db"
  apply_secret mysql-credentials generic \
    --from-file=MYSQL_DATABASE="$work/db" --from-file=MYSQL_USER="$work/db" \
    --from-file=MYSQL_PASSWORD="$work/db-password" \
    --from-file=MYSQL_ROOT_PASSWORD="$work/root-password"
fi
printf 'mysql://easynote:%s@mysql:3306/easynote' "$(cat "$work/db-password")" > "$work/database-url"
for deployment in user-service note-service; do
  if exists "$deployment-db"; then
    keep "$deployment-db"
  else
    apply_secret "$deployment-db" generic --from-file=EASYNOTE_DATABASE_URL="$work/database-url"
  fi
done

# --- Nacos's own keys ------------------------------------------------------
if exists nacos-server; then
  keep nacos-server
else
  head -c 48 /dev/urandom | base64 | tr -d '\n' > "$work/nacos-token"
  printf easy-note > "$work/nacos-identity-key"
  random 24 > "$work/nacos-identity-value"
  apply_secret nacos-server generic \
    --from-file=NACOS_AUTH_TOKEN="$work/nacos-token" \
    --from-file=NACOS_AUTH_IDENTITY_KEY="$work/nacos-identity-key" \
    --from-file=NACOS_AUTH_IDENTITY_VALUE="$work/nacos-identity-value"
fi
if exists nacos-admin; then
  keep nacos-admin
else
  random 24 > "$work/nacos-admin-password"
  apply_secret nacos-admin generic --from-file=NACOS_PASSWORD="$work/nacos-admin-password"
fi
# An easy-note-nacos made before the services had a user of their own names
# the admin `nacos`: replaced, so that no service holds the admin's password.
if exists easy-note-nacos && [[ "$(kc get secret easy-note-nacos \
    -o jsonpath='{.data.NACOS_USERNAME}' | base64 -d)" != nacos ]]; then
  keep easy-note-nacos
else
  printf easy-note > "$work/nacos-username"
  random 24 > "$work/nacos-password"
  apply_secret easy-note-nacos generic \
    --from-file=NACOS_USERNAME="$work/nacos-username" \
    --from-file=NACOS_PASSWORD="$work/nacos-password"
  if kc get deployment nacos >/dev/null 2>&1; then
    echo "  running pods read it as they start: kubectl -n $namespace rollout restart deployment"
  fi
fi
echo "done; now: kubectl apply -k deploy/k8s/overlays/local"
