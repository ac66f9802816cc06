//! Helpers shared by the end-to-end scenarios: the local cluster's kubeconfig,
//! per-test namespaces and `kubectl`.
