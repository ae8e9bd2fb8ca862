"""The control plane server: REST API, web UI (interfaces layer; nothing imports it)."""

from corral.server.app import app_from_environment, create_app
from corral.server.config import ServerConfig

__all__ = ["ServerConfig", "app_from_environment", "create_app"]
