"""devmlops: only trustworthy machine-learning models reach production.

The package is split as DESIGN.md describes: ``core`` decides (pure), ``adapters`` do I/O behind the core's
ports, ``webhook`` and ``operator`` are the two process shells, ``harness`` runs a local control plane for
``make run`` and the integration tests, and ``cli`` is the ``devmlops`` command.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
