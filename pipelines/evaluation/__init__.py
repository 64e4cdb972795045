"""evaluation stage (grows with later issues)."""
