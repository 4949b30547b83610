"""The pure core: decisions from data, with no network, environment, clock or Kubernetes client."""
