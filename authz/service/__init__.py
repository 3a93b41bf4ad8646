"""The running service: the checker (snapshot + clock + core), lifecycle, workers."""
