#!/usr/bin/env bash
# Validates deploy/kubernetes against the Kubernetes JSON schemas with
# kubeconform (make lint-kube). kubeconform is installed on first use from the
# Go module proxy into bin/tools; the schemas are fetched (and cached in
# bin/tools) from the internet. Offline, either step fails: the check is
# skipped with a message, never failed — TestKubernetesManifests (make test)
# still checks the manifests against the binary.
#
#   KUBECONFORM_VERSION   kubeconform module version (pinned)
#   KUBERNETES_VERSION    the Kubernetes version whose schemas are used
#   SCHEMA_LOCATION       a schema location (kubeconform -schema-location),
#                         such as a local mirror; default: kubeconform's own
set -uo pipefail

KUBECONFORM_VERSION=${KUBECONFORM_VERSION:-v0.8.0}
KUBERNETES_VERSION=${KUBERNETES_VERSION:-1.30.0}
GO=${GO:-go}
root=$(cd "$(dirname "$0")/.." && pwd)
tools=$root/bin/tools
bin=$tools/kubeconform-$KUBECONFORM_VERSION

if [ ! -x "$bin" ]; then
	echo "installing kubeconform $KUBECONFORM_VERSION from the Go module proxy into bin/tools"
	mkdir -p "$tools/tmp"
	if ! GOBIN="$tools/tmp" "$GO" install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"; then
		echo "kubeconform: could not be installed (no Go module proxy?), skipped"
		exit 0
	fi
	mv "$tools/tmp/kubeconform" "$bin"
fi

cache=$tools/kubeconform-schemas
mkdir -p "$cache"
args=(-strict -summary -kubernetes-version "$KUBERNETES_VERSION" -cache "$cache"
	-ignore-filename-pattern 'kustomization\.yaml$')
if [ -n "${SCHEMA_LOCATION:-}" ]; then
	args+=(-schema-location "$SCHEMA_LOCATION")
fi

out=$("$bin" "${args[@]}" "$root/deploy/kubernetes" 2>&1)
rc=$?
if [ $rc -ne 0 ] && ! grep -q ' is invalid' <<<"$out" &&
	! grep -v '^Summary:' <<<"$out" | grep -qv 'failed downloading schema'; then
	# Every resource failed only because its schema could not be fetched.
	echo "kubeconform: schemas unreachable, skipped (Kubernetes $KUBERNETES_VERSION; set SCHEMA_LOCATION to a local mirror)"
	exit 0
fi
echo "$out"
exit $rc
