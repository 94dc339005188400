"""HPGD (trajectory-level estimator) and zero-order on RLHF as bilevel RL: :mod:`.spec`
(instances, settings, one run's spec), :mod:`.run` (running it; the independent evaluation and
the references), :mod:`.report` (table and figure), :mod:`.command` (``bilevel-bench rlhf``)."""
