"""Key material: the immutable snapshot the core verifies against, and the sources that swap it."""
