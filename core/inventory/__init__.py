"""Hosts and devices ModelDeck deploys to: inventory, imported configurations, trusted host keys."""
