"""The one home of Ray: the Tuner and trainable (tuner.py), its callbacks (callbacks.py) and the Ray instance
(cluster.py). Nothing else in sepray imports ray."""
