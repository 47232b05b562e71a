"""What a run produces for people to read: scores of a saved run (evaluation.py) and the
feature-space analyses behind them (analysis.py: neighbour purity, paper Figure 2), the plots
(plots.py), the HTML report and assignments CSV (report.py), and the cluster folders
(export.py). Nothing here trains; the modules are imported one by one, on first use."""
