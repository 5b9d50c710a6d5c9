"""Query parameters and result shaping: no I/O."""
