"""Loop guards: echo marks and the loop breaker (`loop`), which events a write echoes
(`writemap`), and coalescing of repeated events (`coalesce`)."""
