"""The names of a run directory's files (the layout is described in :mod:`adaptrl.experiment.rundir`)."""

CONFIG_FILE = "config.yaml"
PROGRESS_FILE = "progress.csv"
CHECKPOINT_DIR = "checkpoints"
