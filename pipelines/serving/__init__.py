"""serving stage (grows with later issues)."""
