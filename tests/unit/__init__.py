"""Unit tests: pure, no servers and no processes; the folders mirror authz/."""
