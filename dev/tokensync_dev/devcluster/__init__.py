"""A real, local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager).

Used by the test suite and by ``make run``/``make cluster-up`` on machines with no
cluster. The binaries are built from the Go module proxy (see ``build``), never mocked.
"""
