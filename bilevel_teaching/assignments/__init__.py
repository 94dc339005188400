"""Assignment definitions: one grader module per assignment of ``examples/teaching/``."""
