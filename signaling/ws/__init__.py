"""The WebSocket edge: the session and its message handlers."""
