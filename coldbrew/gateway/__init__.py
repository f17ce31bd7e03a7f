"""The gateway: one ASGI app on one port for the control API, the runtime API and health."""
