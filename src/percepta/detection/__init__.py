"""percepta.detection."""
