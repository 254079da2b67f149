"""percepta.data.synthetic."""
