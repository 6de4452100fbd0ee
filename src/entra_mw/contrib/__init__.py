"""Framework integrations; each module imports exactly one web framework."""
