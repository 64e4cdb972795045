"""training stage (grows with later issues)."""
