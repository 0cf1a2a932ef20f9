"""PowerNet: learner package."""
