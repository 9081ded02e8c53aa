"""reasoner package."""
