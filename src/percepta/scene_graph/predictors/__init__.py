"""percepta.scene_graph.predictors."""
