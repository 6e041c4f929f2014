"""prewarm's forecaster: traffic in, calibrated probabilistic forecasts out."""
