"""Our own copies of result images: reading their headers, fetching them, storing them."""
