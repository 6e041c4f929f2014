"""prewarm's composition root: the CLI (and, later, the service). The only package that reads the clock,
the environment or the terminal."""
