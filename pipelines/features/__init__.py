"""features stage (grows with later issues)."""
