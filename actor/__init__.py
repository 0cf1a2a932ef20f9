"""PowerNet: actor package."""
