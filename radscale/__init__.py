"""radscale."""
