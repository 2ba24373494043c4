"""ASGI entry point for ``uvicorn service.main:app`` (settings from KWS_* environment variables)."""

from service.app import create_app

app = create_app()
