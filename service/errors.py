"""Client errors with a status, a stable code and a message that names the problem."""

from __future__ import annotations


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def overloaded(error: Exception) -> ServiceError:
    """The answer to work shed by the backlog bound (service/batching.py's ``Overloaded``)."""
    return ServiceError(503, "overloaded", f"the service is at capacity: {error}", {"Retry-After": "1"})
