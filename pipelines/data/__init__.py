"""Data: the event-log contract, the platform simulator and real-data adapters."""
