"""prewarm's composition root: the service (settings, the clock, the scheduled jobs, the decision store, the
API server; `prewarm serve`) and the `prewarm` command line (service/cli/). The only package that reads the
clock, the environment or the terminal."""
