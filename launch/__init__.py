"""PowerNet: launch package."""
