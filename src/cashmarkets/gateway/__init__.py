"""The real-time gateway: WebSocket streams (JSON and the binary MessagePack protocol) fed by the
engine's events. docs/websocket.md is the protocol reference."""
