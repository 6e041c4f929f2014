"""Where heavy per-model work runs: nightly backtests, tuning runs and daily full refits fan out per model
through one small port (`compute.base.Compute`). `compute.local` runs them in this process (one worker) or
in a process pool; `compute.ray_backend` on a Ray cluster, and is the only module that imports `ray`. The
composition root (service/) picks the backend; nothing else knows which one runs."""
