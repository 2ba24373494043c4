"""ASGI entry point for ``uvicorn service.main:app`` (settings from KWS_* environment variables).

``kws-serve --workers N`` loads this module in every worker; it also sets the request-head deadline of
the HTTP protocol class that ``kws-serve`` hands to uvicorn (``--http service.protocol:HeaderTimeoutProtocol``
when running uvicorn by hand).
"""

from service.app import create_app
from service.protocol import HeaderTimeoutProtocol
from service.settings import Settings

settings = Settings()
HeaderTimeoutProtocol.configure(settings.header_read_timeout_seconds)
app = create_app(settings)
