"""The pure core: routing decision, breaker, cross-lane thinking, SSE usage reader, redaction, percentiles.

Nothing here does I/O or reads a clock it was not given; it imports only itself and the config schema."""
