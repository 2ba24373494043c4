"""The API v1 routes, one module per concern: recognition uploads, operations, the WebSocket stream."""
