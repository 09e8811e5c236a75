"""Backend adapters: one module per resource type behind the interface in ``base``."""
