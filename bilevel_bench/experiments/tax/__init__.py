"""The paper's tax-design experiment (§5.2, Fig. 3a/3b): :mod:`.spec` (follower set-ups,
budgets, one run's spec), :mod:`.run` (running it; the exact grid welfare), :mod:`.report`
(summary table and figures), :mod:`.command` (``bilevel-bench tax``)."""
