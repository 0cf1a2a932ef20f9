"""PowerNet: common package."""
