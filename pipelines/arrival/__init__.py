"""An arrival, one pipeline for `train`, `learn`, `stream run` and the job queue."""
