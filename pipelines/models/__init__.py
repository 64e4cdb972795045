"""models stage (grows with later issues)."""
