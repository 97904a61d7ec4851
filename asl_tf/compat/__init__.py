"""asl_tf/compat."""
