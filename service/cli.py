"""``kws-serve``: run the keyword service with uvicorn (flags override KWS_* environment settings)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.inference import KeywordModel, ModelLoadError
from service.settings import Settings

# After SIGTERM, in-flight requests get this long to finish (deploy/kubernetes sizes its grace period on it).
GRACEFUL_SHUTDOWN_SECONDS = 20


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key in ("request_id", "status", "duration_ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.json_logs else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("kws")
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    root.propagate = False


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What kws-serve hands uvicorn, with one worker or several."""
    from service.protocol import GuardedHttpProtocol

    return {
        "host": settings.host, "port": settings.port, "log_level": settings.log_level, "access_log": False,
        "http": GuardedHttpProtocol.configure(settings.header_read_timeout_seconds),
        # uvicorn buffers a WebSocket message (decompressed) up to ws_max_size before the app sees it: the
        # app's own limit, so a larger one is refused (close 1009) as it arrives instead of held in memory.
        "ws_max_size": settings.stream_max_message_bytes,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kws-serve",
        description="Serve keyword recognition over HTTP: POST audio to /v1/recognize; docs at /docs. "
                    "Every setting also reads from the environment as KWS_<NAME> (e.g. KWS_MAX_BATCH_SIZE=32).",
    )
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1; 0.0.0.0 in the container)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--model", type=Path, help="ONNX file from kws-export (default: the shipped kws10 model)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "model_path": args.model}.items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as error:  # one line per bad setting, named as the user set it
        for problem in error.errors():
            name = "KWS_" + "_".join(str(part) for part in problem["loc"]).upper()
            print(f"kws-serve: invalid setting {name}: {problem['msg']}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:  # fail fast, with the file and the problem named, before binding the port
        KeywordModel.load(settings.model_path)
    except ModelLoadError as error:
        print(f"kws-serve: {error}", file=sys.stderr)
        return 2
    import uvicorn

    if args.workers > 1:
        import os

        os.environ.update({"KWS_" + k.upper(): str(v) for k, v in overrides.items()})
        uvicorn.run("service.main:app", workers=args.workers, **uvicorn_options(settings))
        return 0
    from service.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(app, **uvicorn_options(settings))
    server = uvicorn.Server(config)
    state = app.state.service
    state.on_failure = lambda: setattr(server, "should_exit", True)  # then exit 1, below
    # Readiness drops on SIGTERM in the app's lifespan (service/app.py), in this process and in every worker.
    # uvicorn re-raises the stop signal after its graceful shutdown; a no-op handler lets us exit 0.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: None)
    server.run()
    if state.failure is not None:
        print(f"kws-serve: {state.failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
