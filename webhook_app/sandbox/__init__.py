"""A Depositphotos-compatible fake upstream with adjustable delays, faults and callback shapes.

It plays the other side of the wire, so it imports nothing of the service."""

from .app import create_sandbox_app
from .knobs import SandboxKnobs, knobs_from_env
from .server import SandboxServer, serve

__all__ = ["SandboxKnobs", "SandboxServer", "create_sandbox_app", "knobs_from_env", "serve"]
