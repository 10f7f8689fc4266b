"""What the tests share: factories of rows and payloads, the chaos ledger, the production
install, loopback helpers (a subscriber, a WSGI transport), the OpenAPI check."""
