"""experiments stage (grows with later issues)."""
