"""The tools around the service: the `webhook-app` command line, the HTTP client for the
query API, prompt files, and the launcher of the processes.

The client speaks HTTP only; the command line may start the service's processes."""
