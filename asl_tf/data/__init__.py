"""asl_tf/data."""
