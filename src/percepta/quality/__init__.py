"""percepta.quality."""
