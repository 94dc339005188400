"""Reference and deliberately wrong solutions of the teaching assignments (for the TAs and the
tests; not shipped with the package)."""
