"""Clustering a fixed representation: the final stage's candidates and its label-free
rule (final.py), the manifold step (manifold.py), the run's partition record
(partition.py), the self-labelling stage (self_label.py) and the glue the trainer
calls (stage.py). Nothing here is imported by ``conr --help``."""
