"""Color operations."""
