"""The simulator's engines: how a round's cohort is trained and reduced (loop, vectorised, Ray)."""
