"""One module per admission gate; each takes data and returns a ``GateResult``."""
