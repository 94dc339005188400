"""HPGD, AMD and zero-order on dynamic contract design (paper App. B): :mod:`.spec` (instances,
settings, one run's spec), :mod:`.run` (running it; reference optima), :mod:`.report` (table
and figures), :mod:`.command` (``bilevel-bench contract``)."""
