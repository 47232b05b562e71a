"""The automatic pipeline: the settings that follow from the images (settings.py), the
time budget (budget.py, plans.py, machine_load.py), K when it is not given
(k_selection.py) and the run they resolve to."""
