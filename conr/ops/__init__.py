"""The method's math as pure tensor functions: contextual neighbourhoods (neighbors.py),
boundary ratios and the filter (boundary.py), and the clustering scores (metrics.py)."""
