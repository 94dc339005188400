"""The applications: Four-Rooms reward shaping, tax design, contract design, RLHF."""
