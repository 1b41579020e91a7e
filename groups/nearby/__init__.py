"""Strangers near each other: the proximity index and its compiled kernels."""
