//! Kubernetes API types of podrestore (`podrestore.io/v1alpha1`).
