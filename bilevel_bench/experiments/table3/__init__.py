"""The paper's Four-Rooms Table 3 (with Fig. 1b and Fig. 2): :mod:`.spec` (what one run is),
:mod:`.run` (running it), :mod:`.report` (hyperparameter selection and the table),
:mod:`.figures`, :mod:`.command` (``bilevel-bench table3``)."""
