"""Client library and CLI for the CQRS order system."""
