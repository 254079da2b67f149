"""percepta.export."""
