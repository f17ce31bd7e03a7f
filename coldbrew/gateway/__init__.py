"""The gateway: one ASGI app on one port for the control API, the invocations API and health."""
