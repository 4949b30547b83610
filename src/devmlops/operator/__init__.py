"""The kopf operator: reconciles admitted ModelDeployments into model servers and reports their status."""
