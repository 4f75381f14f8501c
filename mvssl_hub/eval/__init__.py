"""The evaluation wing: how good a backbone's features are.

- :mod:`.probes`: feature extraction, weighted kNN, the linear probe;
- :mod:`.monitor`: label-free measures (RankMe, alpha-ReQ, LiDAR).
"""
