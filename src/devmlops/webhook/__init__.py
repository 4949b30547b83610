"""The FastAPI admission webhook: a thin shell around ``core.decide()``."""

from devmlops.webhook.app import WebhookDeps, create_app
from devmlops.webhook.settings import WebhookSettings

__all__ = ["WebhookDeps", "WebhookSettings", "create_app"]
