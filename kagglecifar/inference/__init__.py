"""Inference: batched, test-time-augmented prediction over the test cache, the submission CSV it writes,
and evaluation of a run on its validation split."""
