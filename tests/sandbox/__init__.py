"""The sandbox: its profiles, its layers, the escape battery, and tools that run in it."""
