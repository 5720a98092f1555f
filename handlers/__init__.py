"""Tornado request handlers: thin adapters from HTTP and WebSocket events to the service."""
