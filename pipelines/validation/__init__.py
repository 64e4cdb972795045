"""validation stage (grows with later issues)."""
