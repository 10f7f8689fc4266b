"""The HTTP edge: the callback receiver, the query API, the dashboard, health and metrics.

Handlers parse, call a service, serialize; errors are raised as `errors.ErrorAnswer` and
rendered by one handler. They reach the shared objects through `webhook_app.extensions`.
"""
