"""Shared plumbing of the rule CLIs: `stage` (arguments, config, exit codes; every rule), `train` (the training
CLIs' run folder, job and launch) and `s2s` (the stage-5 data rules' output folder and manifest)."""
