"""asl_tf/cli."""
