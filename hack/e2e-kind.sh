#!/usr/bin/env bash
# End-to-end on a real kind cluster (needs Docker, kind, helm, kubectl): builds the image,
# installs the chart, runs a fake token endpoint in the cluster, applies a ProviderToken
# and waits for its Secret. `make e2e-kind`. KEEP=1 keeps the cluster afterwards.
# Our CI machines have no Docker engine: this runs on a developer's machine or in a CI
# with Docker; CI here only shellchecks it.
set -euo pipefail

cluster=${CLUSTER:-tokensync-e2e}
image=${IMAGE:-tokensync:e2e}
namespace=e2e
here=$(cd "$(dirname "$0")/.." && pwd)

for tool in docker kind helm kubectl; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 2; }
done

cleanup() {
  if [[ "${KEEP:-0}" != 1 ]]; then
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

kind create cluster --name "$cluster" --wait 120s
kubectl config use-context "kind-$cluster"
docker build -t "$image" "$here"
kind load docker-image "$image" --name "$cluster"

kubectl create namespace "$namespace"
# A fake OAuth2 endpoint in the cluster: the benchmark's, run by the operator image
# (it has aiohttp), from a ConfigMap.
kubectl -n "$namespace" create configmap fake-endpoint --from-file="$here/bench/fake_endpoint.py"
kubectl -n "$namespace" apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: fake-token-endpoint}
spec:
  selector: {matchLabels: {app: fake-token-endpoint}}
  template:
    metadata: {labels: {app: fake-token-endpoint}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532}
      containers:
        - name: endpoint
          image: $image
          imagePullPolicy: Never
          command: [python, /fake/fake_endpoint.py, --port=8080, --expires-in=120]
          ports: [{containerPort: 8080}]
          volumeMounts: [{name: fake, mountPath: /fake}]
      volumes: [{name: fake, configMap: {name: fake-endpoint}}]
---
apiVersion: v1
kind: Service
metadata: {name: fake-token-endpoint}
spec:
  selector: {app: fake-token-endpoint}
  ports: [{port: 8080, targetPort: 8080}]
YAML
kubectl -n "$namespace" rollout status deployment/fake-token-endpoint --timeout=120s

endpoint_host="fake-token-endpoint.$namespace.svc.cluster.local:8080"
helm install tokensync "$here/deploy/helm/tokensync" \
  --namespace tokensync-system --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" \
  --set image.pullPolicy=Never \
  --set "allowedHosts={$endpoint_host}" --set allowInsecureHttp=true \
  --set allowPrivateNetworks=true \
  --wait --timeout 180s

kubectl -n "$namespace" apply -f - <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: e2e-credentials
  labels: {tokensync.dev/role: credentials}
stringData: {clientId: e2e, clientSecret: e2e-secret}
---
apiVersion: tokensync.dev/v1alpha1
kind: ProviderToken
metadata: {name: e2e}
spec:
  provider:
    oauth2: {tokenUrl: "http://$endpoint_host/token"}
  credentialsRef: {name: e2e-credentials}
  target: {name: e2e-token}
YAML

kubectl -n "$namespace" wait --for=condition=Ready providertoken/e2e --timeout=120s
kubectl -n "$namespace" get secret e2e-token -o jsonpath='{.metadata.annotations.tokensync\.dev/expires-at}'
echo
kubectl -n "$namespace" get providertoken e2e -o wide
echo "e2e: the Secret exists and the ProviderToken is Ready"
