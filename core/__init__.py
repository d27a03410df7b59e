"""ModelDeck's domain logic. Never imports Qt: the CLI, the runtime and CI use it headless."""
