"""Example apps: one small API per integration, each runnable against a local FakeEntra (see its README)."""
