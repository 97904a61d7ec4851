"""asl_tf/model."""
