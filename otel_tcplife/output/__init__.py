"""Writers that turn batches of Sessions into output."""
