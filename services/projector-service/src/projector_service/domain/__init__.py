"""Pure projections: no I/O."""
