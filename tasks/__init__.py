"""Task data: specs, sources, the built-in catalog and validation (the bottom layer)."""
