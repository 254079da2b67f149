"""percepta.scene_graph."""
