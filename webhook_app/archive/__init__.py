"""Our own copies of result images: reading their headers, fetching them, storing them
(a local directory or S3). Imports only the root modules and `infra`."""
