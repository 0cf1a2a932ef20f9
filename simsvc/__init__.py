"""PowerNet: simsvc package."""
