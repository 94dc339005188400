"""The leader benchmark suite."""
