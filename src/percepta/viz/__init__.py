"""percepta.viz."""
