"""I/O behind the core's ports: verification libraries, OPA, Kubernetes caches, certificates."""
