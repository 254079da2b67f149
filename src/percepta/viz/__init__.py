"""Pictures: boxes on images, scene graphs, plots, and the HTML run report."""
