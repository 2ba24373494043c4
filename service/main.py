"""ASGI entry point for ``uvicorn service.main:app`` (settings from KWS_* environment variables).

``kws-serve --workers N`` loads this module in every worker; it also sets the request-head deadline of
the HTTP protocol class that ``kws-serve`` hands to uvicorn. Running uvicorn by hand, pass what kws-serve
does (service/cli.py, ``uvicorn_options``): ``--http service.protocol:GuardedHttpProtocol`` and
``--ws-max-size`` equal to ``KWS_STREAM_MAX_MESSAGE_BYTES``.
"""

from service.app import create_app
from service.protocol import GuardedHttpProtocol
from service.settings import Settings

settings = Settings()
GuardedHttpProtocol.configure(settings.header_read_timeout_seconds)
app = create_app(settings)
