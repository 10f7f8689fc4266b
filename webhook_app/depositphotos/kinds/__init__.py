"""Job kinds: each module says how to submit a job upstream, read its callbacks, and poll it."""
