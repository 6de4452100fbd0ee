"""A small weather API protected by entra_mw's Django integration (with DRF), runnable against FakeEntra."""
