"""percepta.losses."""
