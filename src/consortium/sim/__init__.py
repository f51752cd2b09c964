"""The simulator: a project spec over N simulated clients in one process (vectorised or looped) or on Ray."""
