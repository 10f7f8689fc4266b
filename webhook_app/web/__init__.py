"""The HTTP side: callback receiver, query API, health."""
