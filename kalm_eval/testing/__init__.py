"""Test and benchmark support (random tiny checkpoints, real-shape configs); product code never imports it."""
